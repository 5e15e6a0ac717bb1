"""CMAL's heads: `cmal_embedding` (retrieval through the VTC space) and `cmal_answer_decoder` (VQA
answers ranked by a decoder's likelihood, the paper's VQA)."""

from __future__ import annotations

import torch
from torch import nn

from vlfw.errors import ConfigError
from vlfw.modules.heads import Head
from vlfw.registry import HEADS
from vlfw.tasks import TaskInfo


@HEADS.register("cmal_embedding")
class CmalEmbeddingHead(Head):
    """image_pooled / text_pooled (VTC-normalised by the model) passed on as the retrieval embeddings,
    so that pre-training VTC weights are what retrieval compares."""

    reads = ("image_pooled", "text_pooled")

    def forward(self, features, batch):
        return {"image_embeddings": features["image_pooled"], "text_embeddings": features["text_pooled"]}


@HEADS.register("cmal_answer_decoder")
class AnswerDecoderHead(Head):
    """VQA as answer generation, ranked over the candidate answers (the paper, after ALBEF).

    A Transformer decoder (causal self-attention, cross-attention to the CMAI states: features
    `fused_states` / `fused_mask`) over each answer's tokens `[CLS] a1 .. ak [SEP]`. Training: the
    teacher-forced negative log-likelihood of every answer with a score, weighted by that score,
    summed over the batch's answers / B (`loss/answer_decoder`; the dataset's configured losses should
    be []). Evaluation: the answers' first tokens pick the `candidates` most likely answers, whose
    full log-likelihoods are the `logits` (the rest get -1e4), so vqa_accuracy's argmax is the ranking's top.
    """

    reads = ("fused_states", "fused_mask")

    def __init__(self, hidden_size: int, task_info: TaskInfo, num_layers: int = 2, num_heads: int | None = None,
                 max_answer_length: int = 8, candidates: int = 128, dropout: float = 0.1) -> None:
        super().__init__(hidden_size, task_info)
        if task_info.answers is None or task_info.text is None:
            raise ConfigError(f"cmal_answer_decoder: dataset {task_info.dataset!r} gives no answer strings or tokenizer")
        text = task_info.text
        tokenizer = text.build_tokenizer()
        rows = [tokenizer(str(a))["input_ids"][:max_answer_length].tolist() for a in task_info.answers]
        for row in rows:
            if row[-1] != text.sep_id:  # truncated: still end with [SEP]
                row[-1] = text.sep_id
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), text.pad_id, dtype=torch.long)
        for k, row in enumerate(rows):
            ids[k, :len(row)] = torch.tensor(row)
        self.register_buffer("answer_ids", ids, persistent=False)
        self.pad_id = text.pad_id
        self.candidates = int(candidates)
        heads = int(num_heads) if num_heads is not None else max(1, hidden_size // 64)
        self.words = nn.Embedding(text.vocab_size, hidden_size, padding_idx=text.pad_id)
        self.positions = nn.Embedding(length, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        layer = nn.TransformerDecoderLayer(hidden_size, heads, 4 * hidden_size, dropout, activation="gelu", batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, int(num_layers))
        self.output = nn.Linear(hidden_size, text.vocab_size)

    def token_log_probs(self, memory: torch.Tensor, memory_mask: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """(R, S, H) memory, (R, S) mask, (R, T) decoder inputs -> (R, T, V) log-probabilities."""
        length = inputs.shape[1]
        x = self.norm(self.words(inputs) + self.positions(torch.arange(length, device=inputs.device))[None])
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=inputs.device), diagonal=1)
        states = self.decoder(x, memory, tgt_mask=causal, tgt_key_padding_mask=inputs == self.pad_id,
                              memory_key_padding_mask=~memory_mask.bool(), tgt_is_causal=True)
        return self.output(states).float().log_softmax(dim=-1)

    def answer_log_likelihood(self, memory: torch.Tensor, memory_mask: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        """Summed log-probability of each answer's tokens after [CLS]: answers (R,) indices -> (R,)."""
        ids = self.answer_ids[answers]
        inputs, labels = ids[:, :-1], ids[:, 1:]
        log_probs = self.token_log_probs(memory, memory_mask, inputs)
        picked = log_probs.gather(-1, labels[..., None]).squeeze(-1)
        return (picked * (labels != self.pad_id)).sum(dim=-1)

    def forward(self, features, batch):
        memory, memory_mask = features["fused_states"], features["fused_mask"]
        size, count = memory.shape[0], self.answer_ids.shape[0]
        if self.training:
            targets = batch.targets.float()
            questions, answers = (targets > 0).nonzero(as_tuple=True)
            if not len(questions):
                return {"loss/answer_decoder": memory.sum() * 0.0}
            likelihood = self.answer_log_likelihood(memory[questions], memory_mask[questions], answers)
            return {"loss/answer_decoder": -(targets[questions, answers] * likelihood).sum() / size}
        k = min(self.candidates, count)
        if k == count:  # every answer is a candidate: no preselection pass
            top = torch.arange(count, device=memory.device).expand(size, count)
        else:
            start = self.answer_ids[:1, :1].expand(size, 1)
            first = self.token_log_probs(memory, memory_mask, start)[:, 0]  # (B, V)
            top = first[:, self.answer_ids[:, 1]].topk(k, dim=1).indices  # (B, k): by each answer's first token
        rows = torch.arange(size, device=memory.device).repeat_interleave(k)
        likelihood = self.answer_log_likelihood(memory[rows], memory_mask[rows], top.reshape(-1)).view(size, k)
        logits = torch.full((size, count), -1.0e4, device=memory.device)
        return {"logits": logits.scatter(1, top, likelihood)}

