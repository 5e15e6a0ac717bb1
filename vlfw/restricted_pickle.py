"""Restricted unpickling for the official pickle-based data formats.

Two released formats vlfw reads are pickles: RefCOCO's `refs(<splitBy>).p` (a Python-2 pickle of
a list of dicts) and the MMF per-image `<stem>_info.npy` (an `.npy` file holding a pickled dict of
numpy arrays). A plain `pickle.load` / `np.load(allow_pickle=True)` of such a file runs whatever
the file asks for. The loaders here rebuild only data; every other global is refused before it is
imported or called, with one `UnsafePickleError` naming the file and the global.

What a pickle may contain (see docs/security.md):

- opcodes that build data without any global: None, True/False, int, float, str, bytes, list,
  tuple, dict, set/frozenset (protocol 4+), bytearray (protocol 5);
- these globals, and nothing else (Python-2 spellings included):
    builtins.set, builtins.frozenset, builtins.complex       (also as __builtin__.<name>)
    builtins.bytes, builtins.bytearray                       only from a str/bytes (no size)
    _codecs.encode                                           only with the "latin1" codec
                                                             (how protocols 0-2 store bytes)
  and, for numpy arrays and scalars (numpy 1.x writes numpy.core, numpy 2.x numpy._core):
    numpy.core.multiarray._reconstruct, numpy._core.multiarray._reconstruct
                                                             only as _reconstruct(ndarray, (0,), b"b")
    numpy.core.multiarray.scalar, numpy._core.multiarray.scalar
    numpy.core.numeric._frombuffer, numpy._core.numeric._frombuffer   (protocol 5)
                                                             only over bytes, never object dtype
    numpy.ndarray                                            only as _reconstruct's argument
    numpy.dtype                                              plain dtypes only: bool, int, uint,
                                                             float, complex, str, bytes, object,
                                                             datetime64, timedelta64
- no structured, subarray or void dtypes, no ndarray subclasses, no persistent ids.

numpy trusts a dtype's pickled state (its flags): a forged state can turn raw bytes into object
pointers, which crashes or worse. So pickles that use numpy go through the pure-Python unpickler
with its calls and BUILD steps checked: a dtype's state is applied to a private copy, validated,
and replaced by the dtype numpy itself builds from the result (`np.dtype(d.str)`); an array's
state is applied once, to an array this loader made. Pickles without numpy use the C unpickler.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Callable

import numpy as np

from vlfw.errors import DataError

try:  # numpy >= 2 (and the forward-compatibility package of numpy 1.26)
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct  # type: ignore[no-redef]
    from numpy.core.multiarray import scalar as _numpy_scalar  # type: ignore[no-redef]

ALLOWED_SUMMARY = ("only plain containers, numbers, strings, bytes, None/bool and plain numpy arrays/scalars "
                   "are allowed (see docs/security.md)")
PLAIN_DTYPE_KINDS = frozenset("biufcUSOMm")  # bool int uint float complex str bytes object datetime timedelta


# -- errors ------------------------------------------------------------------------------------
class PickleLoadError(DataError):
    """A pickle that could not be loaded; `reason` is the message without the file name."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class UnsafePickleError(PickleLoadError):
    """The pickle asks for a global or an operation outside the allow-list. Never retried."""

    def __init__(self, source: str, forbidden: str) -> None:
        self.forbidden = forbidden
        super().__init__(source, f"refused to unpickle {forbidden}: {ALLOWED_SUMMARY}")


class CorruptPickleError(PickleLoadError):
    """Truncated or malformed data; `detail` is "ExceptionType: message"."""

    def __init__(self, source: str, detail: str) -> None:
        self.detail = detail
        super().__init__(source, f"cannot unpickle ({detail})")


class PickleTextError(CorruptPickleError):
    """A Python-2 byte string that does not decode with the given encoding (retry as latin1)."""


class _NumpyNeeded(Exception):
    """The C unpickler met a numpy global: start again with the checked pure-Python one."""


def _detail(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# -- the admitted callables --------------------------------------------------------------------
def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """`_codecs.encode` as protocols 0-2 use it for bytes: `encode(str, "latin1")`, nothing else."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") != "latin1" \
            or errors != "strict":
        raise _Refused(f"the global _codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _from_text(kind: type) -> Callable[..., Any]:
    """bytes / bytearray as pickles build them: (), (bytes,), (str, encoding); never bytes(size)."""

    def build(*args: Any) -> Any:
        if not args:
            return kind()
        if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
            return kind(args[0])
        if len(args) in (2, 3) and isinstance(args[0], str) and isinstance(args[1], str):
            return kind(_latin1_encode(*args))
        raise _Refused(f"the global builtins.{kind.__name__} with arguments of types "
                       f"{', '.join(type(a).__name__ for a in args)}")

    build.__name__ = kind.__name__
    return build


class _Refused(Exception):
    """Raised inside an admitted callable given forbidden arguments; becomes UnsafePickleError."""


_PLAIN_GLOBALS: dict[tuple[str, str], Any] = {}
for _module in ("builtins", "__builtin__"):
    _PLAIN_GLOBALS.update({(_module, "set"): set, (_module, "frozenset"): frozenset, (_module, "complex"): complex,
                           (_module, "bytes"): _from_text(bytes), (_module, "bytearray"): _from_text(bytearray)})
_PLAIN_GLOBALS[("_codecs", "encode")] = _latin1_encode
_NEWOBJ_CLASSES = (set, frozenset, complex)

_NUMPY_NAMES = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct", ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.multiarray", "scalar"): "scalar", ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer", ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
}


def _plain_dtype(dtype: Any, what: str) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise _Refused(f"{what} with a {type(dtype).__name__} where a numpy dtype belongs")
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind not in PLAIN_DTYPE_KINDS:
        raise _Refused(f"{what} with the dtype {dtype} (structured, subarray and void dtypes are not allowed)")
    return dtype


# -- the two engines ---------------------------------------------------------------------------
class _PlainUnpickler(pickle.Unpickler):
    """The C unpickler with only the builtin globals: fast, for pickles without numpy."""

    def __init__(self, file: Any, source: str, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        found = _PLAIN_GLOBALS.get((module, name))
        if found is not None:
            return found
        if (module, name) in _NUMPY_NAMES:
            raise _NumpyNeeded()
        raise UnsafePickleError(self.source, f"the global {module}.{name}")


class _Memo(dict):
    """The unpickler's memo, remembering where each dtype is stored so it can be replaced."""

    def __init__(self) -> None:
        super().__init__()
        self.dtype_keys: dict[int, list[Any]] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        if isinstance(value, np.dtype):
            self.dtype_keys.setdefault(id(value), []).append(key)


class _NumpyUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python unpickler with every call, instantiation and BUILD step checked."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: Any, source: str, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self.source = source
        self.memo = _Memo()
        self._fresh_arrays: dict[int, np.ndarray] = {}  # made by _reconstruct, state not yet set
        # one bound method each: calls are admitted by identity
        checked = {"reconstruct": self._reconstruct, "scalar": self._scalar, "frombuffer": self._frombuffer,
                   "dtype": self._dtype}
        self._numpy = dict(checked, ndarray=np.ndarray)  # ndarray: only as _reconstruct's argument
        self._callables = {id(f): f for f in list(_PLAIN_GLOBALS.values()) + list(checked.values())}

    def find_class(self, module: str, name: str) -> Any:
        found = _PLAIN_GLOBALS.get((module, name))
        if found is not None:
            return found
        if (module, name) in _NUMPY_NAMES:
            return self._numpy[_NUMPY_NAMES[(module, name)]]
        raise UnsafePickleError(self.source, f"the global {module}.{name}")

    # numpy's globals, with their arguments checked
    def _dtype(self, spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
        if not isinstance(spec, str) or len(spec) > 16:
            raise _Refused(f"the global numpy.dtype with the argument {spec!r:.40}")
        try:
            dtype = np.dtype(spec)
        except TypeError as error:
            raise _Refused(f"the global numpy.dtype with the argument {spec!r} ({error})") from None
        return _plain_dtype(dtype, "numpy.dtype")

    def _reconstruct(self, subtype: Any, shape: Any, code: Any) -> np.ndarray:
        if subtype is not np.ndarray:
            raise _Refused("numpy's _reconstruct of something other than a plain numpy.ndarray")
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape) and 0 in shape) \
                or code not in (b"b", "b"):
            raise _Refused(f"numpy's _reconstruct with the arguments {shape!r:.40}, {code!r:.20}")
        array = _numpy_reconstruct(np.ndarray, shape, code)
        self._fresh_arrays[id(array)] = array
        return array

    def _scalar(self, dtype: Any, data: Any = None) -> Any:
        dtype = _plain_dtype(dtype, "numpy's scalar")
        if dtype.hasobject:
            return data  # what numpy returns for an object scalar
        if isinstance(data, str):  # Python-2 byte strings read with encoding="latin1"
            data = data.encode("latin1")
        if not isinstance(data, bytes):
            raise _Refused(f"numpy's scalar with a {type(data).__name__} where bytes belong")
        return _numpy_scalar(dtype, data)

    def _frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        dtype = _plain_dtype(dtype, "numpy's _frombuffer")
        if dtype.hasobject or not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F"):
            raise _Refused(f"numpy's _frombuffer of a {type(buffer).__name__} as {dtype}")
        return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)

    # the opcodes that call or mutate
    def _check_callable(self, func: Any, opcode: str) -> None:
        if id(func) not in self._callables or self._callables[id(func)] is not func:
            name = "numpy.ndarray" if func is np.ndarray else type(func).__name__
            raise UnsafePickleError(self.source, f"a {opcode} call of {name}")

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        self._check_callable(func, "REDUCE")
        stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not any(cls is allowed for allowed in _NEWOBJ_CLASSES):
            raise UnsafePickleError(self.source, f"a NEWOBJ of {getattr(cls, '__name__', type(cls).__name__)}")
        self.append(cls.__new__(cls, *args))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if not any(cls is allowed for allowed in _NEWOBJ_CLASSES):
            raise UnsafePickleError(self.source, f"a NEWOBJ_EX of {getattr(cls, '__name__', type(cls).__name__)}")
        self.append(cls.__new__(cls, *args, **kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_readonly_buffer(self) -> None:  # protocol 5: only over bytes, never a view of an array
        buffer = self.stack[-1]
        if isinstance(buffer, bytearray):
            self.stack[-1] = bytes(buffer)
        elif not isinstance(buffer, bytes):
            raise UnsafePickleError(self.source, f"a READONLY_BUFFER over a {type(buffer).__name__}")

    dispatch[pickle.READONLY_BUFFER[0]] = load_readonly_buffer

    def _instantiate(self, klass: Any, args: Any) -> None:  # INST and OBJ (protocols 0 and 1)
        self._check_callable(klass, "INST/OBJ")
        self.append(klass(*args))

    def load_build(self) -> None:
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        if isinstance(inst, np.dtype):
            stack[-1] = self._built_dtype(inst, state)
            return
        if type(inst) is np.ndarray and self._fresh_arrays.pop(id(inst), None) is inst:
            if not isinstance(state, tuple) or len(state) not in (4, 5):
                raise _Refused("a numpy array state that is not numpy's")
            _plain_dtype(state[-3], "a numpy array state")
            inst.__setstate__(state)
            return
        raise UnsafePickleError(self.source, f"a state (BUILD) for a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = load_build

    def _built_dtype(self, inst: np.dtype, state: Any) -> np.dtype:
        # numpy trusts a dtype's pickled flags: apply the state to a private copy only, then keep
        # the dtype numpy builds from the result, so that no forged field survives.
        private = np.dtype(inst, copy=True)
        private.__setstate__(state)
        canonical = _plain_dtype(np.dtype(_plain_dtype(private, "a numpy dtype state").str), "a numpy dtype state")
        if canonical.kind != inst.kind:
            raise _Refused(f"a numpy dtype state that turns {inst} into {canonical}")
        for key in self.memo.dtype_keys.pop(id(inst), []):
            if self.memo.get(key) is inst:
                dict.__setitem__(self.memo, key, canonical)
        return canonical


# -- public API --------------------------------------------------------------------------------
def _run(engine: type, data: bytes, source: str, encoding: str) -> Any:
    try:
        return engine(io.BytesIO(data), source, encoding).load()
    except (UnsafePickleError, _NumpyNeeded):
        raise
    except _Refused as refused:
        raise UnsafePickleError(source, str(refused)) from None
    except UnicodeDecodeError as error:
        raise PickleTextError(source, _detail(error)) from None
    except Exception as error:  # noqa: BLE001 - truncated, not a pickle, or numpy refusing the data
        raise CorruptPickleError(source, _detail(error)) from None


def loads(data: bytes, source: str, encoding: str = "ASCII") -> Any:
    """Unpickle `data` (read from `source`, named in errors) through the allow-list above.

    `encoding` decodes Python-2 byte strings, as in `pickle.loads`. Raises UnsafePickleError
    (a forbidden global or operation), PickleTextError (retry with encoding="latin1") or
    CorruptPickleError, all DataErrors whose message names `source`.
    """
    try:
        return _run(_PlainUnpickler, data, source, encoding)
    except _NumpyNeeded:
        return _run(_NumpyUnpickler, data, source, encoding)


def load_npy_object(data: bytes, source: str) -> Any:
    """The content of a `.npy` file, where a pickled (object) array is unpickled through `loads`.

    The header is parsed with numpy.lib.format; arrays without objects load with
    np.load(allow_pickle=False). Python-2 files are retried with encoding="latin1", as numpy
    advises for them.
    """
    from numpy.lib import format as npy_format

    handle = io.BytesIO(data)
    try:
        version = npy_format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(handle)
        else:
            shape, _, dtype = npy_format._read_array_header(handle, version)  # 3.0: no public reader
    except Exception as error:  # noqa: BLE001 - not a .npy file, or a bad header
        raise CorruptPickleError(source, f"not a valid .npy file: {_detail(error)}") from None
    if not dtype.hasobject:
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as error:  # noqa: BLE001
            raise CorruptPickleError(source, f"not a valid .npy file: {_detail(error)}") from None
    body = data[handle.tell():]
    try:
        value = loads(body, source)
    except PickleTextError:
        value = loads(body, source, encoding="latin1")
    if isinstance(value, np.ndarray) and value.shape != tuple(shape):
        raise CorruptPickleError(source, f"the header says shape {tuple(shape)} but the pickle holds {value.shape}")
    return value
