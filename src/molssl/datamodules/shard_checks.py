"""Checking a shard against its manifest entry while it streams, cheaply.

A prepared data set's ``manifest.json`` lists each shard's record count, ``mol_id`` range and
sha256. Streaming used to read whatever file sat at a shard's path: a shard overwritten by
another valid one (``cp shard-000001.tar shard-000000.tar``) trained on molecules 10-19 twice
and 0-9 never, with exit status 0. :func:`iter_verified_chunks` compares what it reads with the
entry as it goes, so such a shard fails on its first chunk, and a shard cut short, grown or
rewritten fails at its end, each as one line naming the shard.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from molssl.datamodules.records import PackedRecords
from molssl.datamodules.shards import ManifestError, ShardInfo, iter_shard_chunks

__all__ = ["iter_verified_chunks"]


def iter_verified_chunks(
    url_or_path: str | os.PathLike[str], info: ShardInfo
) -> Iterator[PackedRecords]:
    """Stream a shard's chunks, checking them against its manifest entry as they come.

    Cheap checks, so that a shard replaced by another valid one (a copy, a shard of another
    data set) or cut short fails on its first chunk or at its end instead of training on the
    wrong molecules:

    * every record's ``mol_id`` lies in the entry's ``[first_mol_id, last_mol_id]``, strictly
      increasing, the first one being ``first_mol_id``;
    * read to the end: ``count`` records, ending at ``last_mol_id``, and the bytes hash to
      ``sha256`` (hashed while streaming; a reader that stops early skips these).

    Raises:
        ManifestError: One line naming the shard and what does not match.
        ShardFormatError: Not a readable shard (see :func:`iter_shard_chunks`).
    """
    name = str(url_or_path)
    seen = 0
    previous = info.first_mol_id - 1
    chunks = iter_shard_chunks(url_or_path, expected_sha256=info.sha256)
    hash_error: ManifestError | None = None
    while seen <= info.count:
        try:
            chunk = next(chunks)
        except StopIteration:
            break
        except ManifestError as error:  # the sha256, checked after the last chunk
            hash_error = error
            break
        ids = np.asarray(chunk.arrays["mol_id"], dtype=np.int64)
        if len(ids):
            steps = np.diff(np.concatenate([[previous], ids]))
            outside = (ids < info.first_mol_id) | (ids > info.last_mol_id) | (steps <= 0)
            if seen == 0 and ids[0] != info.first_mol_id:
                outside[0] = True
            if outside.any():
                at = int(np.argmax(outside))
                raise ManifestError(
                    f"{name} holds mol_id {int(ids[at])} (record {seen + at}), but the manifest "
                    f"lists this shard with mol_ids {info.first_mol_id} to {info.last_mol_id} in "
                    "increasing order: the file was replaced or damaged; prepare the data set "
                    "again"
                )
            previous = int(ids[-1])
        seen += len(ids)
        if seen <= info.count:
            yield chunk
    # The count says more than the hash about a shard cut short or grown, so it goes first.
    if seen != info.count or (info.count and previous != info.last_mol_id):
        found = seen if seen <= info.count else f"more than {info.count}"
        raise ManifestError(
            f"{name} holds {found} records, the manifest says {info.count}: the file was "
            "replaced or damaged; prepare the data set again"
        )
    if hash_error is not None:
        raise hash_error
