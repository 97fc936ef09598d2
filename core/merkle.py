"""The audit log's Merkle tree, as RFC 9162 §2.1 (Certificate Transparency v2) defines it.

Pure functions over hashes: no database, no clock, no callgate import. The same algorithms are
published (RFC 9162, Go's ``golang.org/x/mod/sumdb/tlog``, ``transparency-dev/merkle``), so an
auditor can check what the log serves with code of their own and the log's public key.

Hashing (RFC 9162 §2.1.1): a leaf is ``SHA-256(0x00 ‖ data)`` and an interior node
``SHA-256(0x01 ‖ left ‖ right)``; the two prefixes keep a leaf from ever being passed off as a
node (second-preimage resistance). The tree over ``n > 1`` leaves splits at ``k``, the largest
power of two smaller than ``n``: ``MTH(D[n]) = HASH(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n]))``. The
empty tree's root is ``SHA-256()``. Leaves are numbered from 0.

Storage model (as in Go's sumdb/tlog). The sequencer stores the hash of every *perfect*
subtree, addressed by ``(level, index)``: level 0 holds the leaf hashes, and the node
``(k, i)`` covers leaves ``[i·2^k, (i+1)·2^k)``. A perfect subtree's hash never changes once
its last leaf is in, so the stored rows are append-only. Every subtree that RFC 9162's
recursion names starts at a multiple of a power of two at least its size, so its hash folds
from the perfect subtrees that the binary digits of its size name (at most ⌈log2 n⌉ of them):
a root, an inclusion proof or a consistency proof needs O(log n) stored hashes, and appending
a leaf needs only the tree's right edge (its "compact range").

Reading the store: every function that reads takes ``get(level, index) -> bytes``; the
``*_nodes`` functions list the ``(level, index)`` pairs a proof will read, so that a caller
backed by a database can fetch them in one query and pass
``lambda level, index: fetched[level, index]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "GetNode",
    "Node",
    "ProofError",
    "TreeBuilder",
    "append",
    "compact_range",
    "consistency_proof",
    "consistency_proof_nodes",
    "inclusion_proof",
    "inclusion_proof_nodes",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_inclusion",
    "verify_consistency",
    "verify_inclusion",
]

_sha256 = hashlib.sha256

HASH_SIZE = 32
"""Bytes in every hash of the tree (SHA-256)."""

EMPTY_ROOT = _sha256(b"").digest()
"""The root of the empty tree: ``MTH({}) = SHA-256()`` (RFC 9162 §2.1.1)."""

Node = tuple[int, int, bytes]
"""A stored perfect-subtree hash: ``(level, index, hash)``."""

GetNode = Callable[[int, int], bytes]
"""Reads the stored hash of the perfect subtree ``(level, index)``."""

Range = tuple[int, int]


class ProofError(ValueError):
    """A proof or a tree size that cannot be right (raised by :func:`root_from_inclusion`)."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 ‖ data)``: the hash of one leaf (RFC 9162 §2.1.1)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 ‖ left ‖ right)``: an interior node (RFC 9162 §2.1.1)."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): where MTH splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(size: int, what: str = "size") -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{what} must be a non-negative integer, not {size!r}")


def _perfect_subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """The perfect subtrees, left to right, whose fold is ``MTH(D[lo:hi])``.

    Only for the ranges RFC 9162's recursion produces: ``lo`` a multiple of a power of two
    at least ``hi - lo``. The split of such a range at its largest power of two below its
    size is exactly its binary decomposition, so the pieces are the set bits of ``hi - lo``
    from the highest down, each aligned on its own size.
    """
    width = hi - lo
    if width <= 0 or lo & ((1 << (width - 1).bit_length()) - 1):
        raise ValueError(f"[{lo}, {hi}) is not a subtree of an RFC 9162 tree")
    out: list[tuple[int, int]] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def _get_checked(get: GetNode, level: int, index: int) -> bytes:
    h = get(level, index)
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ValueError(f"stored node ({level}, {index}) is not a {HASH_SIZE}-byte hash: {h!r}")
    return h


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Combine a range's perfect-subtree hashes (left to right) into its MTH."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = _sha256(b"\x01" + h + acc).digest()
    return acc


def _range_hash(lo: int, hi: int, get: GetNode) -> bytes:
    return _fold([_get_checked(get, lv, i) for lv, i in _perfect_subtrees(lo, hi)])


def compact_range(size: int) -> list[tuple[int, int]]:
    """The perfect subtrees ``(level, index)`` that make up a tree of ``size`` leaves.

    Its right edge, one node per set bit of ``size`` from the largest: all that is needed to
    compute the root or to append (``transparency-dev/merkle``'s compact range ``[0, size)``).
    """
    _check_size(size)
    return _perfect_subtrees(0, size) if size else []


def root(size: int, get: GetNode) -> bytes:
    """``MTH(D[0:size])`` from the stored perfect subtrees: ``popcount(size)`` reads."""
    _check_size(size)
    if size == 0:
        return EMPTY_ROOT
    return _range_hash(0, size, get)


def _inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees of RFC 9162 §2.1.3.1's ``PATH(index, D[size])``, in proof order.

    PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) if m < k, else PATH(m - k, D[k:n]) :
    MTH(D[0:k]). Walking from the root, each step names the sibling of the half holding the
    leaf; the proof lists them deepest first.
    """
    _check_size(size)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
        raise ValueError(f"leaf index {index!r} is not in a tree of size {size}")
    ranges: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def _consistency_ranges(m: int, n: int) -> list[Range]:
    """The subtrees of RFC 9162 §2.1.4.1's ``PROOF(m, D[n])``, in proof order.

    SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}; for m < n:
    SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n]) if m <= k, else
    SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]).
    """
    _check_size(m, "m")
    _check_size(n, "n")
    if m > n:
        raise ValueError(f"no consistency proof from size {m} to the smaller size {n}")
    if m == 0 or m == n:
        # RFC 9162 defines PROOF for 0 < m < n. Every tree extends the empty one, and a tree
        # is consistent with itself: there is nothing to prove, so the proof is empty.
        return []
    ranges: list[Range] = []
    lo, hi, whole = 0, n, True
    while True:
        width = hi - lo
        if m == width:
            if not whole:
                ranges.append((lo, hi))
            break
        k = _split(width)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    ranges.reverse()
    return ranges


def _nodes_of(ranges: Iterable[Range]) -> list[tuple[int, int]]:
    seen: dict[tuple[int, int], None] = {}
    for lo, hi in ranges:
        for node in _perfect_subtrees(lo, hi):
            seen[node] = None
    return list(seen)


def inclusion_proof_nodes(index: int, size: int) -> list[tuple[int, int]]:
    """The stored ``(level, index)`` hashes that :func:`inclusion_proof` reads (to prefetch)."""
    return _nodes_of(_inclusion_ranges(index, size))


def consistency_proof_nodes(m: int, n: int) -> list[tuple[int, int]]:
    """The stored ``(level, index)`` hashes that :func:`consistency_proof` reads."""
    return _nodes_of(_consistency_ranges(m, n))


def inclusion_proof(index: int, size: int, get: GetNode) -> list[bytes]:
    """RFC 9162 §2.1.3.1 ``PATH(index, D[size])``: the inclusion proof of leaf ``index``.

    Every sibling on the path is a perfect subtree except at most one on the right edge
    (once the path enters a left half, that half is perfect), so this reads O(log size)
    stored hashes. Empty for ``size == 1``.
    """
    return [_range_hash(lo, hi, get) for lo, hi in _inclusion_ranges(index, size)]


def consistency_proof(m: int, n: int, get: GetNode) -> list[bytes]:
    """RFC 9162 §2.1.4.1 ``PROOF(m, D[n])``: proves that the tree of size ``m`` is a prefix.

    As for inclusion, at most one subtree in the proof is not perfect, so this reads
    O(log n) stored hashes. Empty when ``m == n`` and, by convention, when ``m == 0``.
    """
    return [_range_hash(lo, hi, get) for lo, hi in _consistency_ranges(m, n)]


class TreeBuilder:
    """The tree's right edge (compact range), grown one leaf hash at a time.

    O(log n) memory, and O(1) amortised hashing per leaf (a leaf completes one perfect
    subtree on average): rebuilding the root of a million leaves takes about a second in
    CPython. Use it to recompute the log from its entries (``callgate audit verify``), to
    compare roots at every checkpointed size along the way (:meth:`root` costs
    O(log n)), or, with :meth:`from_compact_range`, to resume from a verified size.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        # One hash per set bit of _size, the largest (leftmost) subtree first.
        self._stack: list[bytes] = []

    @classmethod
    def from_compact_range(cls, size: int, get: GetNode) -> TreeBuilder:
        """A builder positioned at ``size`` from the stored right edge (popcount(size) reads).

        Check its :meth:`root` against a trusted checkpoint before trusting what is built on
        it: if the roots match, so do the edge hashes (SHA-256 being collision resistant).
        """
        builder = cls()
        builder._stack = [_get_checked(get, lv, i) for lv, i in compact_range(size)]
        builder._size = size
        return builder

    @property
    def size(self) -> int:
        """Leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf (its hash, ``leaf_hash(data)``)."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf {self._size}: not a {HASH_SIZE}-byte hash")
        stack = self._stack
        h = leaf_hash
        n = self._size
        # Each trailing 1 bit of the old size is a perfect subtree the new leaf completes.
        while n & 1:
            h = _sha256(b"\x01" + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append every leaf hash in order."""
        for h in leaf_hashes:
            self.append(h)

    def append_nodes(self, leaf_hash: bytes) -> list[Node]:
        """Append a leaf and return the perfect subtrees it creates, the leaf first."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf {self._size}: not a {HASH_SIZE}-byte hash")
        index = self._size
        created: list[Node] = [(0, index, leaf_hash)]
        stack = self._stack
        h = leaf_hash
        n = index
        level = 0
        while n & 1:
            h = _sha256(b"\x01" + stack.pop() + h).digest()
            n >>= 1
            level += 1
            created.append((level, n, h))
        stack.append(h)
        self._size += 1
        return created

    def root(self) -> bytes:
        """``MTH`` of the leaves appended so far (``EMPTY_ROOT`` for none)."""
        if not self._stack:
            return EMPTY_ROOT
        return _fold(self._stack)

    def compact_range(self) -> list[Node]:
        """The right edge as stored nodes ``(level, index, hash)``, largest first."""
        return [
            (lv, i, h) for (lv, i), h in zip(compact_range(self._size), self._stack, strict=True)
        ]


def append(size: int, new_leaf_hashes: Sequence[bytes], get: GetNode) -> list[Node]:
    """The perfect subtrees created by appending ``new_leaf_hashes`` to a tree of ``size``.

    Returns every new node ``(level, index, hash)`` (the new leaves at level 0 included),
    each exactly once, for the caller to insert. Reads only the existing right edge
    (``popcount(size)`` calls to ``get``) and does O(len(new_leaf_hashes)) hashing. The
    result is the same whether leaves arrive in one batch or in many.
    """
    _check_size(size)
    builder = TreeBuilder.from_compact_range(size, get)
    created: list[Node] = []
    for h in new_leaf_hashes:
        created.extend(builder.append_nodes(h))
    return created


def _check_hash(h: bytes, what: str) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")


def root_from_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for leaf ``index`` of a tree of ``size`` leaves.

    RFC 9162 §2.1.3.2, steps 1-4 (step 5 compares the result with the root; see
    :func:`verify_inclusion`). ``fn`` is the leaf's position and ``sn`` the last position at
    the current level: the proof element goes on the left when the node is a right child or
    the rightmost node of a level that has no right sibling. Raises :class:`ProofError` when
    the proof cannot belong to such a tree (too long, too short, bad sizes).
    """
    _check_hash(leaf_hash, "leaf hash")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ProofError(f"tree size {size!r} holds no leaf")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
        raise ProofError(f"leaf index {index!r} is not in a tree of size {size}")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("proof has more hashes than the tree has levels")
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof has fewer hashes than the tree has levels")
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show leaf ``index`` in the tree with this ``root``?"""
    try:
        return root_from_inclusion(leaf_hash, index, size, proof) == root
    except ProofError:
        return False


def verify_consistency(
    m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of size ``m`` and root ``root_m`` a prefix of ``n``'s?

    Beyond the RFC's ``0 < m < n``: ``m == n`` holds with an empty proof and equal roots (two
    different roots at one size are a fork), and ``m == 0`` with an empty proof and
    ``root_m == EMPTY_ROOT``.
    """
    for v in (m, n):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            return False
    if not 0 <= m <= n:
        return False
    for h in (root_m, root_n, *proof):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            return False
    if m == n:
        return not proof and root_m == root_n
    if m == 0:
        return not proof and root_m == EMPTY_ROOT
    # 1. An empty proof proves nothing between two different sizes.
    if not proof:
        return False
    path = list(proof)
    # 2. When m is a power of two, the old tree is a perfect subtree of the new one and its
    #    root is the proof's implicit first element.
    if m & (m - 1) == 0:
        path.insert(0, root_m)
    # 3-4. Skip the levels where the old tree's last node is a right child: the proof starts
    #      at the first level where it has a sibling to its right (or none at all).
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5-6. Rebuild both roots at once: fr sees only the hashes left of the old edge.
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    # 7. Both roots must come out, and the walk must have reached the top.
    return sn == 0 and fr == root_m and sr == root_n
