"""A retrieval index of a dual-encoder run: embed images (and texts) once, then search.

    index = predictor.retrieval()
    index.add_images(["a.jpg", "b.jpg"])            # ids default to the paths
    index.search("a red circle", k=5)              # [{"id", "score"}] best first
    index.add_texts(["a red circle", "two squares"])
    index.search_texts("a.jpg", k=1)
    index.save("index.safetensors"); RetrievalIndex.load(predictor, "index.safetensors")

Embeddings come from the model's forward on the retrieval dataset's evaluation samples, exactly
as the evaluator computes them; similarity is text . image, as the Recall@K metric ranks.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import torch

from vlfw.errors import DataError


class RetrievalIndex:
    def __init__(self, predictor: Any, dataset: str, detector: Any = None) -> None:
        self.predictor = predictor
        self.dataset = dataset
        self.detector = detector
        self.image_ids: list[str] = []
        self.image_embeddings = torch.zeros(0, 0)
        self.text_ids: list[str] = []
        self.text_embeddings = torch.zeros(0, 0)
        self._anchor: Any = None  # an indexed image, the visual input of text-only embedding passes

    def _embed(self, items: list[tuple[list, dict]], key: str) -> torch.Tensor:
        predictor = self.predictor
        chunks = []
        for batch, outputs in predictor.batches(self.dataset, predictor.samples(self.dataset, items, self.detector)):
            value = outputs[key].detach().float().cpu()
            if key == "text_embeddings":  # (B, K, D): the real captions of each sample
                mask = batch.get("text_mask")
                mask = torch.ones(value.shape[:2], dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool().cpu()
                value = value[mask]
            chunks.append(value)
        return torch.cat(chunks) if chunks else torch.zeros(0, 0)

    def embed_images(self, images: Sequence[Any]) -> torch.Tensor:
        return self._embed([([image], {"texts": [""]}) for image in images], "image_embeddings")

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        if self._anchor is None:
            raise DataError("add images to the index first (a text embedding pass needs one visual input)")
        texts = [str(t) for t in texts]
        size = max(1, self.predictor.batch_size)
        return self._embed([([self._anchor], {"texts": texts[i:i + size]}) for i in range(0, len(texts), size)],
                           "text_embeddings")

    def add_images(self, images: Sequence[Any], ids: Sequence[str] | None = None) -> "RetrievalIndex":
        images = list(images)
        ids = [str(i) for i in ids] if ids is not None else [str(i) if isinstance(i, (str, os.PathLike)) else
                                                              f"image_{len(self.image_ids) + n}" for n, i in enumerate(images)]
        if len(ids) != len(images):
            raise DataError(f"{len(ids)} ids for {len(images)} images")
        if not images:
            return self
        embeddings = self.embed_images(images)
        self.image_embeddings = embeddings if not self.image_ids else torch.cat([self.image_embeddings, embeddings])
        self.image_ids += ids
        if self._anchor is None:
            self._anchor = images[0]
        return self

    def add_texts(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> "RetrievalIndex":
        texts = [str(t) for t in texts]
        ids = [str(i) for i in ids] if ids is not None else texts
        embeddings = self.embed_texts(texts)
        self.text_embeddings = embeddings if not self.text_ids else torch.cat([self.text_embeddings, embeddings])
        self.text_ids += ids
        return self

    @staticmethod
    def _top(scores: torch.Tensor, ids: list[str], k: int) -> list[dict]:
        order = torch.sort(scores, descending=True, stable=True).indices[: max(1, min(int(k), len(ids)))]
        return [{"id": ids[int(i)], "score": round(float(scores[i]), 6)} for i in order]

    def search(self, text: str | Sequence[str], k: int = 5) -> Any:
        """The k indexed images closest to the text (a list of rankings for a list of texts)."""
        if not self.image_ids:
            raise DataError("the index holds no images: add_images first")
        single = isinstance(text, str)
        queries = self.embed_texts([text] if single else list(text))
        rankings = [self._top(self.image_embeddings @ q, self.image_ids, k) for q in queries]
        return rankings[0] if single else rankings

    def search_texts(self, image: Any, k: int = 5) -> list[dict]:
        """The k indexed texts closest to the image."""
        if not self.text_ids:
            raise DataError("the index holds no texts: add_texts first")
        query = self.embed_images([image])[0]
        return self._top(self.text_embeddings @ query, self.text_ids, k)

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        from vlfw.runner.checkpoint import atomic_write

        tensors = {"image_embeddings": self.image_embeddings.contiguous(), "text_embeddings": self.text_embeddings.contiguous()}
        metadata = {"image_ids": json.dumps(self.image_ids), "text_ids": json.dumps(self.text_ids), "dataset": self.dataset}
        tmp = f"{path}.tmp"
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as handle:
            data = handle.read()
        os.remove(tmp)
        atomic_write(path, lambda out: out.write(data))

    @classmethod
    def load(cls, predictor: Any, path: str | os.PathLike, anchor: Any = None) -> "RetrievalIndex":
        """An index written by `save`; `anchor`: an image to embed later text queries with (else
        searching by text needs add_images first)."""
        from safetensors import safe_open

        if not os.path.isfile(path):
            raise DataError(f"retrieval index not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
            index = cls(predictor, metadata.get("dataset") or predictor.dataset_for("retrieval"))
            index.image_ids, index.text_ids = json.loads(metadata["image_ids"]), json.loads(metadata["text_ids"])
            index.image_embeddings, index.text_embeddings = tensors["image_embeddings"], tensors["text_embeddings"]
        except (KeyError, ValueError, OSError, Exception) as error:  # noqa: BLE001  (a corrupt or foreign file)
            raise DataError(f"{path}: not a vlfw retrieval index ({error})") from None
        index._anchor = anchor
        return index
