"""The parallel decode-once pass (a thread pool over chunks of files) behind ``verify`` and scanning."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

from cellgen.data.entries import _Entry
from cellgen.data.pixels import _Inspection, _inspect

PROGRESS_MIN_FILES = 1000  # progress=None shows a bar from this many files on

_VERIFY_CHUNK = 64  # images per task in the parallel verify pass


def _show_progress(progress, count: int) -> bool:
    return bool(progress) if progress is not None else count >= PROGRESS_MIN_FILES


def _inspect_all(source, entries: list[_Entry], crop, size_hw, keep_images: bool, workers: int,
                 progress, stop_at_first_error: bool, description: str) -> list[_Inspection]:
    """Decodes every entry once, in parallel, in chunks; results in entry order."""
    from tqdm import tqdm

    chunks = [entries[start:start + _VERIFY_CHUNK] for start in range(0, len(entries), _VERIFY_CHUNK)]

    def inspect_chunk(chunk):
        return [_inspect(source, entry, crop, size_hw, keep_images) for entry in chunk]

    results: list[_Inspection] = []
    bar = tqdm(total=len(entries), desc=description, unit="img", file=sys.stderr,
               disable=not _show_progress(progress, len(entries)), leave=False)
    executor = ThreadPoolExecutor(max(1, workers), thread_name_prefix="cellgen-verify")
    try:
        for chunk_results in executor.map(inspect_chunk, chunks):
            for inspection in chunk_results:
                if stop_at_first_error and inspection.error is not None:
                    raise inspection.error
            results.extend(chunk_results)
            bar.update(len(chunk_results))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return results
