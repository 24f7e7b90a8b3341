"""Dataset loader for the fixture tasks: data files are found next to this file.

lm-eval hands `dataset_kwargs` to `datasets.load_dataset` untouched, so a relative
`data_files` path is read against the current working directory, not the YAML's folder.
A `custom_dataset: !function utils.load` entry, on the other hand, is resolved relative to
the YAML, and lm-eval calls it with the task's metadata plus `dataset_kwargs` as keyword
arguments; resolving `data_files` against `__file__` here makes the task load from any CWD.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(data_files, **kwargs):
    """Load a JSON-lines dataset whose `data_files` are relative to this folder."""
    import datasets

    if isinstance(data_files, dict):
        files = {split: str(HERE / name) for split, name in data_files.items()}
    else:
        files = str(HERE / data_files)
    return datasets.load_dataset("json", data_files=files)
