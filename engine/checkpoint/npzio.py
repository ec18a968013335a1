"""A checkpoint's data file: an uncompressed ``.npz`` (what ``np.savez`` writes), written
and read without pickle.

Writing streams every array once through a hash, so the file's size and sha256 come with
no second read. Reading takes the bytes whose sha256 was just verified and returns the
arrays as read-only views of them, after checking every ``.npy`` header.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
from typing import BinaryIO

import numpy as np

from engine.checkpoint.errors import CheckpointError

NUMERIC_KINDS = "biuf"


class _HashingWriter:
    """Passes writes on to a file and hashes them. It tells its position but cannot seek,
    so zipfile streams every member once (sizes in data descriptors) and the hash is the
    file's, with no second read and no file-sized buffer in memory."""

    def __init__(self, f: BinaryIO):
        self._f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        written = self._f.write(data)
        self.size += written
        return written

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()


def write_npz(f: BinaryIO, arrays: dict[str, np.ndarray]) -> tuple[int, str]:
    """Write an uncompressed ``.npz`` of ``arrays`` (what ``np.savez`` writes, never
    pickling) to ``f``; returns its size and sha256."""
    out = _HashingWriter(f)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return out.size, out.sha256.hexdigest()


def read_npz(data: bytes, data_file: str) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed ``.npz`` as read-only views of ``data``, by name
    (``data_file`` names the file in errors).

    Every ``.npy`` header is read before any data: a member holding objects (which numpy
    would unpickle), or anything but booleans, integers and floats, is refused.
    """
    # NOTE: np.load(io.BytesIO(data), allow_pickle=False) would be as safe, but it copies
    # every array out of the bytes, and restoring copies them again into the session.
    # Views cost no copy (the point: restoring takes about as long as reading the file and
    # hashing it), and what is loaded is exactly the bytes that were hashed.
    if not data.startswith(b"PK"):
        raise CheckpointError(f"checkpoint data file {data_file} is not an .npz (zip) file")
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"checkpoint data file {data_file} is not a readable .npz: {e}") \
            from None
    arrays = {}
    for info in members:
        where = f"'{info.filename}' in {data_file}"
        if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"checkpoint data file {data_file}: member {where} is not an "
                                  "uncompressed .npy array")
        start = info.header_offset
        if data[start:start + 4] != b"PK\x03\x04":
            raise CheckpointError(f"checkpoint data file {data_file}: bad zip entry {where}")
        name_len, extra_len = struct.unpack("<HH", data[start + 26:start + 30])
        start += 30 + name_len + extra_len
        end = start + info.file_size
        header = io.BytesIO(data[start:min(end, start + 65536 + 16)])
        try:
            version = np.lib.format.read_magic(header)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read_header(header)
        except ValueError as e:
            raise CheckpointError(f"checkpoint data file {data_file}: unreadable array header "
                                  f"for {where}: {e}") from None
        if dtype.hasobject or dtype.kind not in NUMERIC_KINDS or dtype.fields is not None:
            raise CheckpointError(f"checkpoint data file {data_file} holds a {dtype} array "
                                  f"{where}; checkpoints hold only numeric arrays and are never "
                                  "unpickled")
        count = int(np.prod(shape, dtype=np.int64))
        offset = start + header.tell()
        if offset + count * dtype.itemsize != end:
            raise CheckpointError(f"checkpoint data file {data_file}: array {where} has the "
                                  f"wrong number of bytes for shape {shape}")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        arrays[info.filename[:-4]] = np.reshape(array, shape, order="F" if fortran else "C")
    return arrays
