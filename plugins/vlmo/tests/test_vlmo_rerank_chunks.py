"""`itm_rerank` ranks in chunks of query rows: hand-worked re-ranked lists at every chunk size,
and no similarity matmul with more than `chunk_size` rows."""

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from vlfw_vlmo.rerank import itm_rerank

# ITM score table[text][image]; -9: never asked (not in that text's dual-encoder top 2)
TABLE = torch.tensor([[0.0, 5.0, -9.0],
                      [-9.0, 2.0, 1.0],
                      [7.0, 3.0, 4.0]])


class TableModel(nn.Module):
    """score_pairs reads the image index from the pixels and the text index from the first id."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def score_pairs(self, batch):
        return TABLE[batch.input_ids[:, 0], batch.image[:, 0, 0, 0].long()]


class MatmulRows(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.rows = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in ("matmul", "__matmul__", "mm"):
            self.rows.append(out.shape[0])
        return out


def test_itm_rerank_by_hand_at_every_chunk_size():
    image_embeddings = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    text_embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    pixels = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 3, 1, 1).contiguous()
    input_ids = torch.arange(3).view(3, 1)
    # dual-encoder top 2 per text: T0 [I0, I1], T1 [I2, I1], T2 [I1, I2]; ITM reorders by TABLE
    expected_t2i = [[1, 0], [1, 2], [2, 1]]
    # per image: I0 [T0, T2] -> scores 0, 7; I1 [T2, T0] -> 3, 5; I2 [T1, T2] -> 1, 4
    expected_i2t = [[2, 0], [0, 2], [2, 1]]
    for chunk in (1, 2, 100):
        mode = MatmulRows()
        with mode:
            t2i, i2t = itm_rerank(TableModel(), pixels, input_ids, None, image_embeddings, text_embeddings,
                                  k=2, batch_size=2, chunk_size=chunk)
        assert t2i.tolist() == expected_t2i, chunk
        assert i2t.tolist() == expected_i2t, chunk
        assert mode.rows and max(mode.rows) <= min(chunk, 3)
