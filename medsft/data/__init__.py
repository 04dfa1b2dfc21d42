"""SFT data: rows from a hub dataset or local files -> rendered, sharded, padded batches.

Rows stream: nothing is loaded whole, so Huatuo26M (or larger) trains from the hub or disk as is.
One layer per module, each importing only the ones above it:

- `sources`: file readers (JSONL, JSON, CSV, Parquet), local/hub detection, `read_rows`, and the
  errors `InvalidExample`, `EmptySource`, `DataNotFound`.
- `schema`: column presets, `column_map`, `DataSource` (a source and its column mapping, shared
  with evaluation's `DataSpec`), row -> chat messages, `iter_conversations`, the hashed split.
- `stream`: `SFTStream` (split, shards, augmentation, rendering), `StreamStats`, `StreamPosition`.
- `batching`: shuffle buffer, length grouping, packing, `collate`, `data_counts`.
- `module`: `SFTDataModule`, the LightningDataModule (`data:` in the training configs).
- `augment`: synonym swaps (`data.augment`, used by `stream`); `paraphrase`: LLM paraphrases
  written to a file, asked through medsft.metrics.endpoint (the light client layer the judge uses).

`sources` and `schema` import neither torch nor Lightning, `stream` and `batching` torch only.
The names below are re-exported lazily, so `from medsft.data import read_rows` stays light and
`medsft.data.SFTDataModule` (configs' `class_path`) keeps working.

May import: the shared top-level modules, medsft.metrics (the endpoint layer, for paraphrases)
and medsft.model (the loss's supervised positions and
the FLOPs of a packed batch); never training, evaluation or the command line.
"""

from medsft import lazy_exports

_EXPORTS = {
    "sources": (
        "DataNotFound",
        "EmptySource",
        "InvalidExample",
        "LOCAL_SUFFIXES",
        "Row",
        "is_local",
        "check_encoding",
        "check_local_source",
        "local_files",
        "read_rows",
    ),
    "schema": (
        "COLUMN_PRESETS",
        "PRESETS",
        "ROLES",
        "ColumnPreset",
        "Conversation",
        "DataSource",
        "Preset",
        "column_map",
        "in_validation",
        "iter_conversations",
        "to_messages",
        "unit_hash",
    ),
    "stream": ("DATA_COUNTERS", "SFTStream", "StreamPosition", "StreamStats"),
    "batching": ("collate", "data_counts"),
    "module": ("SFTDataModule",),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
