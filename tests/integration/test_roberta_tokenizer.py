"""A RoBERTa-style byte-level BPE tokenizer (pad id 1, <s> ... </s></s> ... </s>) through the whole
stack: the VQA v2 recipes of VL-BERT and of the late-fusion baseline run end to end on it, batches
pad with its pad id, and the models ignore padding (a padded batch gives the unpadded outputs)."""

import json
from pathlib import Path

import torch

from vlfw.config import load_config
from vlfw.data.batch import collate
from vlfw.registry import MODELS
from vlfw.runner import run
from vlfw.testing import shapes_builder

ROOT = Path(__file__).resolve().parents[2]


def text_processor(directory):
    return {"type": "hf_tokenizer", "params": {"path": directory, "max_length": 40}}


def test_vqa_builder_and_models_respect_the_roberta_pad_id(roberta_tokenizer_dir, shapes_tiny_root):
    builder = shapes_builder("vqa2", visual="regions", features={"format": "npy"},
                             processors={"text": text_processor(roberta_tokenizer_dir)})
    info = builder.task_info()
    assert info.text.pad_id == 1 and (info.text.cls_id, info.text.sep_id) == (0, 2) and info.text.mask_id == 4
    dataset = builder.build("val")
    samples = sorted((dataset[i] for i in range(12)), key=lambda s: len(s.input_ids))
    short, long = samples[0], samples[-1]
    assert len(short.input_ids) < len(long.input_ids)
    batch = collate([short, long], "vqa2", builder.pad_values())
    padding = ~batch.attention_mask.bool()
    assert padding.any() and bool((batch.input_ids[padding] == 1).all())  # pad id 1, not 0
    for name, overrides in (("vlbert", {"size": "tiny", "dropout": 0.0, "attention_dropout": 0.0}),
                            ("late_fusion", {"hidden_size": 32, "text_layers": 1, "dropout": 0.0})):
        torch.manual_seed(0)
        model = MODELS.get(name)(overrides, {"vqa2": info}).eval()
        assert model.state_dict()  # built
        with torch.no_grad():
            alone = model(collate([short], "vqa2", builder.pad_values()))["logits"]
            padded = model(batch)["logits"][:1]
        assert torch.allclose(alone, padded, atol=1e-5), name  # the padding of the batch changes nothing


def test_vqa_recipes_run_end_to_end_with_a_roberta_tokenizer(roberta_tokenizer_dir, shapes_tiny_root, tmp_path):
    tokenizer = f"dataset_config.vqa2.processors.text={{type: hf_tokenizer, params: {{path: {roberta_tokenizer_dir}}}}}"
    common = ["dataset_config.vqa2.shapes.size=tiny", "training.max_updates=3", "training.batch_size=4",
              "training.eval_every=3", "training.checkpoint_every=3", "training.progress_bar=false",
              "logging.tensorboard=false", "run_type=train_val_test", tokenizer]
    for recipe, extra in (("projects/vlbert/configs/shapes/vqa2.yaml", ["checkpoint.pretrained=null"]),
                          ("projects/baselines/shapes_vqa2.yaml", ["model_config.late_fusion.hidden_size=32"])):
        save_dir = tmp_path / Path(recipe).parent.name
        config = load_config([f"config={ROOT / recipe}", *common, *extra, f"save_dir={save_dir}"])
        metrics = run(config)
        assert "val/vqa2/vqa_accuracy" in metrics and "test/vqa2/vqa_accuracy" in metrics, recipe
        saved = (save_dir / "config.yaml").read_text()
        assert "hf_tokenizer" in saved
        predictions = json.loads((save_dir / "predictions" / "vqa2_test.json").read_text())
        assert predictions and {"question_id", "answer"} == set(predictions[0])
