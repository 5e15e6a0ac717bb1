"""Does a VL-BERT pre-training checkpoint use the image for MLM? Masked-word accuracy on the
Shapes captions with each caption's own regions and with the next caption's (a shuffled image).

    python plugins/vlbert/scripts/mlm_image_probe.py \
        save/vlbert/shapes_low_data/pretrain/checkpoints/update_2000.pt --split train

Same accuracy both ways = the MLM predicts from the text alone. Also reported for the masked
colour and shape words only (the words a caption cannot give away). The words are masked by the
cc3m builder (seeded, the same in both passes); the model is built as the checkpoint's run
configured it.
"""

from __future__ import annotations

import argparse

import torch
from omegaconf import OmegaConf

from vlfw.data.batch import Batch
from vlfw.datasets import prepare_sources
from vlfw.registry import DATASETS, MODELS
from vlfw.runner.checkpoint import load_checkpoint
from vlfw.world.scene import COLOR_NAMES, SHAPES

REGION_KEYS = ("region_features", "region_boxes", "region_mask", "region_class_probs", "image_size")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--split", default="val")
    parser.add_argument("--world", default="default", help="Shapes world size")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    state = load_checkpoint(args.checkpoint)
    run_config = OmegaConf.create(state["config"]) if "config" in state else OmegaConf.create({})
    builder_cls = DATASETS.get("cc3m")
    data_config = OmegaConf.merge(OmegaConf.create(builder_cls.DEFAULT_CONFIG),
                                  {"source": "shapes", "shapes": {"size": args.world}, "visual": "regions",
                                   "features": {"format": "npy"}})
    prepare_sources({"datasets": ["cc3m"], "dataset_config": {"cc3m": data_config}})  # the Shapes world
    builder = builder_cls(data_config, "cc3m")
    data = builder.build(args.split)
    model_cls = MODELS.get("vlbert")
    model_config = OmegaConf.merge(OmegaConf.create(model_cls.DEFAULT_CONFIG),
                                   OmegaConf.select(run_config, "model_config.vlbert", default={}) or {})
    model = model_cls(model_config, {"cc3m": builder.task_info()})
    model.load_state_dict(state["model"])
    model.eval()

    tokenizer = builder.text_processor
    content = sorted({piece for word in list(SHAPES) + [w for name in COLOR_NAMES for w in name.split()]
                      for piece in tokenizer.tokenize_words([word])[0]})
    content = torch.tensor(content)
    counts = {name: [0, 0, 0, 0] for name in ("own image", "shuffled image")}  # right, masked, right content, content
    with torch.no_grad():
        for start in range(0, len(data), args.batch):
            batch = builder.collate([data[i] for i in range(start, min(len(data), start + args.batch))])
            for name in counts:
                fields = dict(batch)
                if name == "shuffled image":
                    shift = torch.roll(torch.arange(batch.input_ids.shape[0]), 1)
                    fields.update({k: batch[k][shift] for k in REGION_KEYS if k in batch})
                probe = Batch(**fields)
                states, _, _ = model.encode(probe.input_ids, probe.get("token_type_ids"), probe.get("attention_mask"),
                                            model.visual_from_batch(probe))
                labels = probe.mlm_labels
                chosen = labels != -100
                right = model.mlm(states[:, : labels.shape[1]][chosen]).argmax(-1) == labels[chosen]
                is_content = torch.isin(labels[chosen], content)
                tally = counts[name]
                tally[0] += int(right.sum())
                tally[1] += int(chosen.sum())
                tally[2] += int((right & is_content).sum())
                tally[3] += int(is_content.sum())
    for name, (right, masked, right_content, content_total) in counts.items():
        print(f"{name:15} MLM accuracy {right / max(masked, 1):.3f} ({masked} masked words); "
              f"colour/shape words {right_content / max(content_total, 1):.3f} ({content_total})")


if __name__ == "__main__":
    main()
