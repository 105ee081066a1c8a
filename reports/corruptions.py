"""Benchmark vocabulary the report needs: ImageNet-C corruption order and families, ImageNet-P perturbation order
(Hendrycks & Dietterich 2019)."""

COMMON = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
"""The 15 common corruptions, in the benchmark's order; mCE averages over these."""

EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 extra ("validation") corruptions, reported on their own."""

FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
"""The four families of the common corruptions."""


def corruption_sort_key(name: str) -> tuple[int, str]:
    """Sort key putting the common corruptions first in benchmark order, then the extras, then anything else."""
    order = COMMON + EXTRA
    return (order.index(name), "") if name in order else (len(order), name)


PERTURBATIONS = (
    "gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "spatter", "brightness",
    "translate", "rotate", "tilt", "scale",
    "speckle_noise", "gaussian_blur", "snow", "shear",
)
"""The 10 evaluated ImageNet-P perturbations (mFR and mT5D average over these), then the 4 extras."""


def perturbation_sort_key(name: str) -> tuple[int, str]:
    """Sort key putting perturbations in benchmark order, then anything else by name."""
    return (PERTURBATIONS.index(name), "") if name in PERTURBATIONS else (len(PERTURBATIONS), name)
