"""Helpers every stage shares (training, evaluation, reports), with no stage's knowledge in them:

- `nst_common.errors`: the error hierarchy (`NSTError` and its subclasses) and `describe_os_error`;
- `nst_common.files`: atomic writes (umask's file mode, fsync, folder fsync) and safetensors / JSON / array I/O;
- `nst_common.seeding`: `derive_seed`, the one way to turn a run's seed and named parts into a seed;
- `nst_common.distributed`: torchrun helpers (process group, ranks, sharding, collectives);
- `nst_common.progress`: the progress convention of the three commands.

Importing the package imports nothing; each module imports only what it needs (`errors` and `progress` nothing
heavy), so the command lines can parse arguments before torch is loaded.
"""
