"""`small` starts from the bundled MiniLM BERT weights."""

import torch
from safetensors import safe_open
from vlbert_helpers import build_model

from vlfw_vlbert.bert_init import bundled_bert_path


def test_small_loads_the_bundled_bert():
    model = build_model({"vqa2": {"task": "vqa", "num_answers": 5, "visual": "regions"}}, size="small",
                        hidden_size=None, num_layers=None, num_heads=None, intermediate_size=None, vocab_size=30522,
                        geometry_size=2048)
    with safe_open(f"{bundled_bert_path()}/model.safetensors", "pt") as f:
        for name in ("encoder.layer.3.attention.self.query.weight", "embeddings.word_embeddings.weight",
                     "pooler.dense.bias"):
            assert torch.equal(model.state_dict()[name], f.get_tensor(name))
        types = f.get_tensor("embeddings.token_type_embeddings.weight")
    segments = model.embeddings.token_type_embeddings.weight
    assert torch.equal(segments[:2], types) and torch.equal(segments[2], types[0])
    report = model.bert_report
    assert not report["missing"] or all(k.startswith("mlm.") for k in report["missing"])
    assert not report["unexpected"] and not report["mismatched"]
    # from BERT, both visual gains start at 0 (the released code): training starts as BERT
    assert not model.embeddings.visual_ln_object.weight.any() and not model.embeddings.visual_ln_text.weight.any()
    # the VQA head's transform starts as the MLM transform
    assert torch.equal(model.heads.heads["vqa2"].transform.dense.weight, model.mlm.transform.dense.weight)
