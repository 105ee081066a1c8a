"""Data shipped with the evaluator: the published AlexNet ImageNet-C error table (alexnet_imagenet_c.csv)."""
