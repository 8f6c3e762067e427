"""Activation shards: one safetensors file per layer, tensor `activations` of shape [N, P, H].

Shards are written in place row by row (rows arrive in length-sorted batch order), so a
whole layer never has to sit in memory, and renamed into place only once complete: a
crash leaves a `.partial` file, never a truncated shard under the final name.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
from safetensors import safe_open

from .errors import ShardError

TENSOR = "activations"
RESIDUAL = "residual"
# Where in a layer activations are read (emoprobe.extract.site_module), in the order part names
# list them: the residual stream, what the attention and the MLP sub-blocks add to it.
SITES = (RESIDUAL, "attn_out", "mlp_out")


def read_pairs(layers, sites) -> list[tuple[int, str]]:
    """The (layer, site) pairs that exist among `layers` x `sites`: every site at every layer, but
    layer 0 (the embeddings, before any block) only for the residual stream."""
    unknown = sorted(set(sites) - set(SITES))
    if unknown:
        raise ShardError(f"unknown sites {unknown}; the sites are {list(SITES)}.")
    return [(layer, site) for layer in layers for site in sites if site == RESIDUAL or layer > 0]


def shard_file(layer: int | str, site: str = RESIDUAL) -> str:
    """A shard's file name in its part's folder: layer_<L>.safetensors for the residual stream,
    layer_<L>.<site>.safetensors for another site."""
    return f"layer_{layer}.safetensors" if site == RESIDUAL else f"layer_{layer}.{site}.safetensors"
FORMAT_VERSION = "1"
_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16"}


class ShardWriter:
    """Streams rows of one [N, P, H] tensor into a safetensors file at `path`."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int],
                 metadata: dict[str, str], dtype=np.float32):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.row_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        n_bytes = self.shape[0] * self.row_bytes
        header = {
            "__metadata__": {k: str(v) for k, v in metadata.items()},
            TENSOR: {"dtype": _DTYPES[self.dtype], "shape": list(self.shape), "data_offsets": [0, n_bytes]},
        }
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-(8 + len(encoded)) % 8)  # data starts 8-byte aligned
        self.data_start = 8 + len(encoded)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self._fd, struct.pack("<Q", len(encoded)) + encoded)
        os.ftruncate(self._fd, self.data_start + n_bytes)
        self._written = np.zeros(self.shape[0], dtype=bool)

    def write_rows(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Write values[i] (shape [P, H]) as row rows[i] of the tensor."""
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.shape[1:] != self.shape[1:]:
            raise ShardError(f"{self.path}: rows of shape {values.shape[1:]} do not fit {self.shape}.")
        for row, value in zip(rows.tolist(), values):
            os.pwrite(self._fd, value.tobytes(), self.data_start + row * self.row_bytes)
        self._written[rows] = True

    def check_complete(self) -> None:
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            raise ShardError(f"{self.path}: rows {missing[:10].tolist()} were never written.")

    def commit(self) -> None:
        """Check every row was written, flush to disk and move into place atomically."""
        self.check_complete()
        os.fsync(self._fd)
        os.close(self._fd)
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
        self.partial.unlink(missing_ok=True)


def size_problem(path: str | os.PathLike) -> str | None:
    """Why a shard on disk is incomplete (missing, cut short, an unreadable header), or None.

    Reads only the header: its declared tensor sizes must account for the file size exactly.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            (header_bytes,) = struct.unpack("<Q", handle.read(8))
            if header_bytes > 100_000_000:
                return "its header length is implausible"
            header = json.loads(handle.read(header_bytes))
        end = max(entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__")
        expected, actual = 8 + header_bytes + end, path.stat().st_size
    except FileNotFoundError:
        return "it is missing"
    except (OSError, struct.error, ValueError, KeyError, TypeError, IndexError) as exc:
        return f"its header is unreadable ({type(exc).__name__})"
    if actual != expected:
        return f"it has {actual:,} bytes where its header declares {expected:,}"
    return None


def delete_and_rerun(folder: str | os.PathLike) -> str:
    """The fix for a damaged extraction part. Snakemake sees the folder as present, and once it
    is deleted still skips it while the probes fitted from it are up to date: name it as the
    target (the next plain run then refits those probes, their input being newer)."""
    return (f"delete the part and extract it again: rm -r {folder} && snakemake {folder} (the next "
            "`snakemake` then refits its probes)")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except FileNotFoundError as exc:
        raise ShardError(f"activation shard {path} does not exist; {delete_and_rerun(Path(path).parent)}.") from exc
    except Exception as exc:  # noqa: BLE001 (safetensors raises its own error types)
        raise ShardError(_corrupt(path, exc)) from exc


def read_position(path: str | os.PathLike, position_index: int) -> np.ndarray:
    """The [N, H] activations at one position index of a shard, without loading the rest."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return np.asarray(handle.get_slice(TENSOR)[:, position_index, :])
    except Exception as exc:  # noqa: BLE001
        raise ShardError(_corrupt(path, exc)) from exc


def _corrupt(path, exc) -> str:
    return (f"activation shard {path} is unreadable ({type(exc).__name__}: {exc}); it is "
            f"corrupt or truncated: {delete_and_rerun(Path(path).parent)}.")


def check_metadata(path: str | os.PathLike, metadata: dict[str, str], expected: dict[str, str]) -> None:
    """Stop with a message naming every metadata field that differs from what a job expects."""
    mismatches = [f"{key}: shard has {metadata.get(key)!r}, expected {value!r}"
                  for key, value in expected.items() if metadata.get(key) != str(value)]
    if mismatches:
        raise ShardError(
            f"activation shard {path} does not match its inputs ({'; '.join(mismatches)}). "
            f"{delete_and_rerun(Path(path).parent)}."
        )
