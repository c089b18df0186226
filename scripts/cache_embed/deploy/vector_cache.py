"""A semantic cache's vector store in Milvus, through pymilvus.

The same client code talks to Milvus Lite (a local file path as `uri`: an embedded server, used by
the replay and the tests) and to a production Milvus (`http://host:19530`). Vectors are stored
L2-normalised with metric COSINE, so a search's `distance` is the cosine similarity, the number a
semantic cache compares with its threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

INDEX_TYPES = ("FLAT", "HNSW")
PK_FIELD = "pk"
VECTOR_FIELD = "embedding"


@dataclass
class IndexSpec:
    """An index type and its build and search parameters (HNSW: M, efConstruction; search ef)."""

    index_type: str
    build_params: dict = field(default_factory=dict)
    search_params: dict = field(default_factory=dict)

    @classmethod
    def make(cls, index_type: str, hnsw_m: int = 16, hnsw_ef_construction: int = 200, hnsw_ef: int = 64):
        if index_type == "FLAT":
            return cls("FLAT")
        if index_type == "HNSW":
            return cls("HNSW", {"M": hnsw_m, "efConstruction": hnsw_ef_construction}, {"ef": hnsw_ef})
        raise ValueError(f"unsupported index type {index_type!r}; use one of {INDEX_TYPES}")


MILVUS_LIBRARIES = ("pymilvus", "milvus-lite")


class MilvusVectorCache:
    """One collection: INT64 primary key + FLOAT_VECTOR, one index, COSINE."""

    def __init__(self, client, name: str, dim: int, spec: IndexSpec, batch_size: int = 5000):
        from pymilvus import DataType, MilvusClient

        self.client, self.name, self.dim, self.spec, self.batch_size = client, name, dim, spec, batch_size
        if client.has_collection(name):
            client.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(PK_FIELD, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        index_params = client.prepare_index_params()
        index_params.add_index(
            field_name=VECTOR_FIELD, index_type=spec.index_type, metric_type="COSINE", params=dict(spec.build_params)
        )
        client.create_collection(name, schema=schema, index_params=index_params)
        self.count = 0

    def insert(self, ids: np.ndarray, vectors: np.ndarray) -> float:
        """Insert rows, flush and (re)load the collection; returns the seconds it took."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise ValueError(f"expected {len(ids)} vectors of dimension {self.dim}, got shape {vectors.shape}")
        start = time.perf_counter()
        for begin in range(0, len(ids), self.batch_size):
            end = begin + self.batch_size
            rows = [
                {PK_FIELD: int(pk), VECTOR_FIELD: vector.tolist()}
                for pk, vector in zip(ids[begin:end], vectors[begin:end], strict=False)
            ]
            self.client.insert(self.name, rows)
        self.client.flush(self.name)
        # Milvus builds segment indexes at load time and, after a background compaction, in the
        # background; a segment without its index is searched exactly. Release and load again so
        # that every segment present is searched through the index.
        time.sleep(0.5)
        self.client.release_collection(self.name)
        self.client.load_collection(self.name)
        self.count += len(ids)
        return time.perf_counter() - start

    def describe(self) -> dict:
        info = self.client.describe_index(self.name, VECTOR_FIELD)
        return {key: info.get(key) for key in ("index_type", "metric_type", "total_rows", "indexed_rows", "state")}

    def search(
        self, queries: np.ndarray, limit: int = 1, exclude: list[int] | None = None, batch_size: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`limit` (ids, cosine similarities) per query row; -1 / -inf pad missing results.
        `exclude`: primary keys to leave out (a filter expression; one query at a time)."""
        queries = np.asarray(queries, dtype=np.float32)
        ids = np.full((len(queries), limit), -1, dtype=np.int64)
        scores = np.full((len(queries), limit), -np.inf, dtype=np.float64)
        params = {"metric_type": "COSINE", "params": dict(self.spec.search_params)}
        kwargs = {}
        if exclude:
            kwargs["filter"] = f"{PK_FIELD} not in [{', '.join(str(int(pk)) for pk in exclude)}]"
        for begin in range(0, len(queries), batch_size):
            chunk = queries[begin : begin + batch_size]
            result = self.client.search(
                self.name,
                data=chunk.tolist(),
                limit=limit,
                search_params=params,
                output_fields=[PK_FIELD],
                anns_field=VECTOR_FIELD,
                **kwargs,
            )
            for row, hits in enumerate(result):
                for column, hit in enumerate(hits[:limit]):
                    ids[begin + row, column] = int(hit.id)
                    scores[begin + row, column] = float(hit.distance)
        return ids, scores

    def timed_single_searches(self, queries: np.ndarray) -> np.ndarray:
        """Seconds of each one-query search (what a cache pays per lookup)."""
        params = {"metric_type": "COSINE", "params": dict(self.spec.search_params)}
        seconds = np.empty(len(queries))
        for row, query in enumerate(np.asarray(queries, dtype=np.float32)):
            start = time.perf_counter()
            self.client.search(
                self.name,
                data=[query.tolist()],
                limit=1,
                search_params=params,
                output_fields=[PK_FIELD],
                anns_field=VECTOR_FIELD,
            )
            seconds[row] = time.perf_counter() - start
        return seconds

    def drop(self) -> None:
        self.client.drop_collection(self.name)


def open_client(uri: str):
    """A MilvusClient: a local file path starts Milvus Lite; http(s):// reaches a Milvus server."""
    from pymilvus import MilvusClient

    return MilvusClient(uri)
