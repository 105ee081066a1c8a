"""FixRes: the last generation fine-tuned briefly at a higher (test) resolution, written as one more generation.

Models trained at a low resolution see objects larger at test time when the test resolution is higher; a short
fine-tune at that resolution (the classifier, with BatchNorm statistics adapting; or all layers) fixes the
discrepancy (Touvron et al.; 1.5 epochs in the Noisy Student paper). The checkpoint `gen<G>` (G = generations)
has the meta of a generation with the new `input_size`, `stage: "fixres"` and the fine-tuned generation as teacher.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from nst_common import distributed
from nst_core.checkpoint import clear_states, is_complete, read_meta, save_checkpoint
from nst_core.config import RunConfig
from nst_core.data import prepare_data
from nst_core.models import NormalizedClassifier, load_model, versions
from nst_core.training import TrainSet, evaluate_top1, smooth_one_hot, train_generation
from nst_core.transfer import param_group_fn


def run_fixres(cfg: RunConfig, model: NormalizedClassifier, meta: dict[str, Any], gen_dir: Path,
               device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Fine-tune a copy of `model` (whose checkpoint meta is `meta`) at fixres.size into `gen_dir`; returns its meta."""
    if is_complete(gen_dir):
        return load_model(gen_dir, device=device)[1]
    fixres = cfg.fixres
    assert fixres is not None  # called only for a config with a fixres: section
    generation = meta["generation"] + 1
    input_size = [cfg.data.input_size[0], fixres.size, fixres.size]
    data = prepare_data(dataclasses.replace(cfg.data, input_size=input_size), cfg.seed)
    tuned = copy.deepcopy(model)
    targets = smooth_one_hot(data.labeled.labels, data.num_classes, cfg.train.label_smoothing)
    labeled = TrainSet(data.labeled, torch.arange(len(data.labeled)), targets)
    stage_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=cfg.train.lr * fixres.lr_scale,
                                                                    warmup_epochs=0.0, ema_decay=None))
    history = train_generation(tuned, labeled, None, stage_cfg, generation, fixres.epochs, gen_dir / "train_state",
                               device, progress, param_group_fn=param_group_fn(fixres.train_layers == "head"))
    test_top1 = evaluate_top1(tuned, data.test, cfg.pseudo.batch_size, device)
    if distributed.is_main():
        tqdm.write(f"gen{generation}: FixRes of gen{meta['generation']} at {fixres.size}px, test top-1 {test_top1:.2f} %")
    kept = {k: v for k, v in meta.items() if k not in ("sha256", "source")}
    fixres_meta = {
        **kept, "name": f"{cfg.name}/gen{generation}", "run": cfg.name, "generation": generation,
        "teacher": meta["generation"], "config": cfg.to_dict(),
        "input_size": input_size, "stage": "fixres", "fixres": dataclasses.asdict(fixres), "history": history,
        "metrics": {"test_top1": test_top1, "test_n": len(data.test)}, "pseudo_labels": None, "versions": versions(),
    }
    if distributed.is_main():  # one writer, as for every generation; the other ranks read its meta.json
        fixres_meta = save_checkpoint(gen_dir, tuned.model.state_dict(), fixres_meta)
        clear_states(gen_dir)
    distributed.barrier()
    return fixres_meta if distributed.is_main() else read_meta(gen_dir)
