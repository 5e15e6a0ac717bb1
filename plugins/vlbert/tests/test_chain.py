"""Pre-train on Shapes CC3M (MLM + masked RoI classification), then fine-tune on Shapes VQA from
that checkpoint through vlfw's pretrained loading: the heads' transforms come from the MLM
transform and the VQA loss goes down."""

import torch
from vlbert_helpers import build_model, shapes_builder

from vlfw.losses.standard import SoftBinaryCrossEntropy
from vlfw.runner.checkpoint import load_pretrained

SIZE = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 30522,
        "region_feature_size": 256, "geometry_size": 64, "dropout": 0.0, "attention_dropout": 0.0}
REGIONS = {"visual": "regions", "features": {"format": "npy"}}


def batches(builder, split, size, count):
    data = builder.build(split)
    return [builder.collate([data[i % len(data)] for i in range(k * size, (k + 1) * size)]) for k in range(count)]


def test_pretrain_then_finetune_vqa(shapes_tiny_root, tmp_path):
    torch.manual_seed(0)
    cc3m = shapes_builder("cc3m", **REGIONS)
    model = build_model({"cc3m": cc3m.task_info()}, **SIZE)
    assert model.mrc is not None
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    pre = batches(cc3m, "train", 8, 2)
    model.train()
    for step in range(6):
        out = model(pre[step % 2])
        assert {"loss/mlm", "loss/mrc"} <= set(out)
        optimizer.zero_grad()
        sum(out.values()).backward()
        optimizer.step()
    path = tmp_path / "pretrain.pt"
    torch.save({"model": model.state_dict()}, path)

    vqa = shapes_builder("vqa2", **REGIONS)
    finetune = build_model({"vqa2": vqa.task_info()}, **SIZE)
    report = load_pretrained(finetune, path)
    # the new head, and the feature statistics of the fine-tuning dataset (fitted on its own train split)
    assert all(k.startswith(("heads.heads.vqa2.classifier", "region_norm.vqa2_")) for k in report["missing"]), \
        report["missing"]
    assert torch.equal(finetune.encoder.layer[0].output.dense.weight, model.encoder.layer[0].output.dense.weight)
    assert torch.equal(finetune.heads.heads["vqa2"].transform.dense.weight, model.mlm.transform.dense.weight)

    loss_fn = SoftBinaryCrossEntropy()
    train = batches(vqa, "train", 16, 3)
    probe = train[0]
    finetune.eval()
    with torch.no_grad():
        before = loss_fn(probe, finetune(probe)).item()
    optimizer = torch.optim.AdamW(finetune.parameters(), lr=3e-3)
    finetune.train()
    for step in range(24):
        batch = train[step % 3]
        loss = loss_fn(batch, finetune(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    finetune.eval()
    with torch.no_grad():
        after = loss_fn(probe, finetune(probe)).item()
    assert after < 0.7 * before, (before, after)
