import pytest
import torch

from vlfw.registry import MODELS
from vlfw.testing import shapes_builder


@pytest.fixture(scope="module")
def vqa(shapes_tiny_root):
    builder = shapes_builder("vqa2", visual="regions", features={"format": "npy", "normalize": False})
    dataset = builder.build("train")
    batch = builder.collate([dataset[i] for i in range(6)])
    batch["dataset_name"] = "vqa2"
    return builder.task_info(), batch


def decoder_model(info, candidates):
    torch.manual_seed(0)
    heads = {"vqa2": {"type": "cmal_answer_decoder", "params": {"candidates": candidates, "dropout": 0.0}}}
    return MODELS.get("cmal")({"size": "tiny", "dropout": 0.0, "heads": heads}, {"vqa2": info})


def test_answers_are_ranked_by_their_decoder_likelihood(vqa):
    info, batch = vqa
    model = decoder_model(info, candidates=5).eval()
    head = model.heads.heads["vqa2"]
    assert head.answer_ids[:, 0].eq(info.text.cls_id).all()
    with torch.no_grad():
        features = model.vqa_features(batch)
        logits = model(batch)["logits"]
        memory, mask = features["fused_states"], features["fused_mask"]
        count = len(info.answers)
        assert logits.shape == (len(batch.input_ids), count)
        for q in range(len(batch.input_ids)):
            # brute force: every answer's summed token log-probability, one at a time
            every = torch.stack([head.answer_log_likelihood(memory[q:q + 1], mask[q:q + 1], torch.tensor([a]))[0]
                                 for a in range(count)])
            kept = (logits[q] > -1.0e4).nonzero().flatten()
            assert len(kept) == 5
            assert torch.allclose(logits[q, kept], every[kept], atol=1e-4)
            # the five kept are those whose first token is most likely after [CLS]
            first = head.token_log_probs(memory[q:q + 1], mask[q:q + 1], head.answer_ids[:1, :1])[0, 0]
            first_scores = first[head.answer_ids[:, 1]]
            assert first_scores[kept].min() >= first_scores[[a for a in range(count) if a not in kept.tolist()]].max()


def test_the_decoder_learns_the_scored_answers(vqa):
    info, batch = vqa
    model = decoder_model(info, candidates=len(info.answers)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(25):
        loss = model(batch)["loss/answer_decoder"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(batch)["logits"].argmax(dim=-1)
    assert torch.equal(predicted, batch.targets.argmax(dim=-1))  # the best-scored answer of each question
