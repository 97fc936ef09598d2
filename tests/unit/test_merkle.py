"""core.merkle against RFC 9162's recursive definitions, written out again here, and against
the published RFC 6962/9162 test vectors of transparency-dev/merkle (the Go library behind
Trillian and Go's checksum database)."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import merkle
from core.merkle import (
    EMPTY_ROOT,
    ProofError,
    TreeBuilder,
    append,
    compact_range,
    consistency_proof,
    consistency_proof_nodes,
    inclusion_proof,
    inclusion_proof_nodes,
    leaf_hash,
    node_hash,
    root,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)

# --- the reference: RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1, word for word ----------------------


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class RefTree:
    """MTH, PATH and PROOF over D[lo:hi] of a fixed list of leaf inputs (memoised MTH)."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self._mth: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        key = (lo, hi)
        if key not in self._mth:
            n = hi - lo
            if n == 0:
                h = _sha256(b"")
            elif n == 1:
                h = _sha256(b"\x00" + self.leaves[lo])
            else:
                k = _k(n)
                h = _sha256(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))
            self._mth[key] = h
        return self._mth[key]

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _k(n)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        return self.subproof(m, 0, n, True)

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = _k(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]


def _leaves(n: int, seed: int = 0) -> list[bytes]:
    return [f"entry {seed}/{i}".encode() for i in range(n)]


class Store:
    """A dict-backed node store that records every read."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.reads: list[tuple[int, int]] = []

    def get(self, level: int, index: int) -> bytes:
        self.reads.append((level, index))
        return self.nodes[(level, index)]

    def insert(self, created: list[tuple[int, int, bytes]]) -> None:
        for level, index, h in created:
            assert (level, index) not in self.nodes, f"node {(level, index)} created twice"
            self.nodes[(level, index)] = h


def _store_of(leaves: list[bytes]) -> Store:
    store = Store()
    store.insert(append(0, [leaf_hash(d) for d in leaves], store.get))
    store.reads.clear()
    return store


def _reads_within(reads: list[tuple[int, int]], size: int) -> bool:
    """Every node read lies wholly inside the first ``size`` leaves."""
    return all((index + 1) << level <= size for level, index in reads)


# --- published vectors ------------------------------------------------------------------------
# transparency-dev/merkle testonly/constants.go and proof/verify_test.go (the RFC 6962 test data
# of the original Certificate Transparency code). Their proof vectors number leaves from 1;
# converted here to RFC 9162's 0-based indices.

VECTOR_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
VECTOR_NODES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
VECTOR_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (index, size, proof)
VECTOR_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (m, n, proof)
VECTOR_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def _hex(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def test_hashing_is_rfc9162() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert EMPTY_ROOT.hex() == VECTOR_ROOTS[0]
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert (
        node_hash(b"l" * 32, b"r" * 32) == hashlib.sha256(b"\x01" + b"l" * 32 + b"r" * 32).digest()
    )
    # Domain separation: a leaf whose data is two hashes is not the node over them.
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert leaf_hash(a + b) != node_hash(a, b)


def test_published_vectors_stored_nodes_and_roots() -> None:
    store = _store_of(VECTOR_LEAVES)
    for level, row in enumerate(VECTOR_NODES):
        for index, want in enumerate(row):
            assert store.nodes[(level, index)].hex() == want, (level, index)
    assert len(store.nodes) == sum(len(row) for row in VECTOR_NODES)
    for size, want in enumerate(VECTOR_ROOTS):
        assert root(size, store.get).hex() == want
        builder = TreeBuilder()
        builder.extend(leaf_hash(d) for d in VECTOR_LEAVES[:size])
        assert builder.root().hex() == want


@pytest.mark.parametrize(("index", "size", "proof"), VECTOR_INCLUSION)
def test_published_inclusion_vectors(index: int, size: int, proof: list[str]) -> None:
    store = _store_of(VECTOR_LEAVES)
    assert _hex(inclusion_proof(index, size, store.get)) == proof
    lh = leaf_hash(VECTOR_LEAVES[index])
    hashes = [bytes.fromhex(h) for h in proof]
    assert root_from_inclusion(lh, index, size, hashes).hex() == VECTOR_ROOTS[size]
    assert verify_inclusion(lh, index, size, hashes, bytes.fromhex(VECTOR_ROOTS[size]))


@pytest.mark.parametrize(("m", "n", "proof"), VECTOR_CONSISTENCY)
def test_published_consistency_vectors(m: int, n: int, proof: list[str]) -> None:
    store = _store_of(VECTOR_LEAVES)
    assert _hex(consistency_proof(m, n, store.get)) == proof
    hashes = [bytes.fromhex(h) for h in proof]
    assert verify_consistency(
        m, n, bytes.fromhex(VECTOR_ROOTS[m]), bytes.fromhex(VECTOR_ROOTS[n]), hashes
    )


# --- corruptions a verifier must refuse (after transparency-dev/merkle's probes) -------------

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _flip(h: bytes, bit: int = 3) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


def _inclusion_corruptions(
    lh: bytes, index: int, size: int, proof: list[bytes], rt: bytes
) -> list[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]]:
    probes: list[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]] = [
        ("index - 1", (lh, index - 1, size, proof, rt)),
        ("index + 1", (lh, index + 1, size, proof, rt)),
        ("index ^ 2", (lh, index ^ 2, size, proof, rt)),
        ("size * 2", (lh, index, size * 2, proof, rt)),
        ("size // 2", (lh, index, size // 2, proof, rt)),
        ("wrong leaf", (leaf_hash(b"wrong"), index, size, proof, rt)),
        ("empty root", (lh, index, size, proof, EMPTY_ROOT)),
        ("some root", (lh, index, size, proof, SOME_HASH)),
        ("trailing root", (lh, index, size, [*proof, rt], rt)),
        ("trailing hash", (lh, index, size, [*proof, SOME_HASH], rt)),
        ("preceding root", (lh, index, size, [rt, *proof], rt)),
        ("trailing empty", (lh, index, size, [*proof, b""], rt)),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = _flip(wrong[i])
        probes.append((f"proof[{i}] bit flipped", (lh, index, size, wrong, rt)))
    if proof:
        probes.append(("truncated", (lh, index, size, proof[:-1], rt)))
    if len(proof) > 1:
        probes.append(("inserted", (lh, index, size, [proof[0], SOME_HASH, *proof[1:]], rt)))
    return probes


def _consistency_corruptions(
    m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]
) -> list[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]]:
    probes: list[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]] = [
        ("m - 1", (m - 1, n, r1, r2, proof)),
        ("m + 1", (m + 1, n, r1, r2, proof)),
        ("m ^ 2", (m ^ 2, n, r1, r2, proof)),
        ("n * 2", (m, n * 2, r1, r2, proof)),
        ("n // 2", (m, n // 2, r1, r2, proof)),
        ("wrong root1", (m, n, SOME_HASH, r2, proof)),
        ("wrong root2", (m, n, r1, SOME_HASH, proof)),
        ("swapped roots", (m, n, r2, r1, proof)),
        ("empty proof", (m, n, r1, r2, [])),
        ("trailing root1", (m, n, r1, r2, [*proof, r1])),
        ("trailing root2", (m, n, r1, r2, [*proof, r2])),
        ("trailing empty", (m, n, r1, r2, [*proof, b""])),
        ("preceding root1", (m, n, r1, r2, [r1, *proof])),
        ("preceding root2", (m, n, r1, r2, [r2, *proof])),
        ("preceding proof[0]", (m, n, r1, r2, [proof[0], *proof])),
        ("truncated", (m, n, r1, r2, proof[:-1])),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = _flip(wrong[i], 4)
        probes.append((f"proof[{i}] bit flipped", (m, n, r1, r2, wrong)))
    return probes


# --- every size up to 64: stored-subtree proofs equal the RFC's, and verify -------------------

MAX_EXHAUSTIVE = 64


@pytest.fixture(scope="module")
def tree64() -> tuple[RefTree, Store]:
    leaves = _leaves(MAX_EXHAUSTIVE)
    return RefTree(leaves), _store_of(leaves)


def _log_bound(n: int) -> int:
    """Reads a proof may make: one per proof element plus the pieces of one ragged subtree."""
    return 2 * max(1, n.bit_length())


@pytest.mark.parametrize("size", range(1, MAX_EXHAUSTIVE + 1))
def test_every_inclusion_proof(size: int, tree64: tuple[RefTree, Store]) -> None:
    ref, store = tree64
    rt = ref.mth(0, size)
    store.reads.clear()
    assert root(size, store.get) == rt
    assert len(store.reads) == bin(size).count("1")
    for index in range(size):
        store.reads.clear()
        proof = inclusion_proof(index, size, store.get)
        assert proof == ref.path(index, 0, size), (index, size)
        # Only nodes of the size-`size` tree are read (later leaves change nothing), and few.
        assert _reads_within(store.reads, size)
        assert len(store.reads) <= _log_bound(size)
        assert set(store.reads) == set(inclusion_proof_nodes(index, size))
        lh = leaf_hash(ref.leaves[index])
        assert root_from_inclusion(lh, index, size, proof) == rt
        assert verify_inclusion(lh, index, size, proof, rt)
        for desc, probe in _inclusion_corruptions(lh, index, size, proof, rt):
            assert not verify_inclusion(*probe), f"{desc}: index {index}, size {size}"


@pytest.mark.parametrize("n", range(1, MAX_EXHAUSTIVE + 1))
def test_every_consistency_proof(n: int, tree64: tuple[RefTree, Store]) -> None:
    ref, store = tree64
    r2 = ref.mth(0, n)
    for m in range(1, n + 1):
        store.reads.clear()
        proof = consistency_proof(m, n, store.get)
        assert proof == ref.proof(m, n), (m, n)
        assert _reads_within(store.reads, n)
        assert len(store.reads) <= _log_bound(n)
        assert set(store.reads) == set(consistency_proof_nodes(m, n))
        r1 = ref.mth(0, m)
        assert verify_consistency(m, n, r1, r2, proof), (m, n)
        if m == n:
            assert proof == []
            assert not verify_consistency(m, n, r1, SOME_HASH, [])
            assert not verify_consistency(m, n, r1, r2, [r1])
            continue
        for desc, probe in _consistency_corruptions(m, n, r1, r2, proof):
            assert not verify_consistency(*probe), f"{desc}: m {m}, n {n}"


def test_consistency_from_the_empty_tree() -> None:
    ref = RefTree(_leaves(5))
    store = _store_of(ref.leaves)
    assert consistency_proof(0, 5, store.get) == []
    assert consistency_proof(0, 0, store.get) == []
    assert verify_consistency(0, 5, EMPTY_ROOT, ref.mth(0, 5), [])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 5, SOME_HASH, ref.mth(0, 5), [])
    assert not verify_consistency(0, 5, EMPTY_ROOT, ref.mth(0, 5), [EMPTY_ROOT])
    assert not verify_consistency(5, 4, ref.mth(0, 5), ref.mth(0, 4), [])


# --- larger random trees ---------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(min_value=1, max_value=5000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_random_large_trees(size: int, seed: int) -> None:
    rng = random.Random(seed)
    ref = RefTree(_leaves(size, seed))
    store = Store()
    # Build in random batches: the stored nodes must not depend on how leaves arrived.
    done = 0
    while done < size:
        batch = rng.randint(1, max(1, size // 4))
        new = [leaf_hash(d) for d in ref.leaves[done : done + batch]]
        store.reads.clear()
        store.insert(append(done, new, store.get))
        assert len(store.reads) <= bin(done).count("1")
        done += len(new)
    rt = ref.mth(0, size)
    assert root(size, store.get) == rt
    for _ in range(5):
        index = rng.randrange(size)
        store.reads.clear()
        proof = inclusion_proof(index, size, store.get)
        assert len(store.reads) <= _log_bound(size)
        assert proof == ref.path(index, 0, size)
        lh = leaf_hash(ref.leaves[index])
        assert verify_inclusion(lh, index, size, proof, rt)
        for desc, probe in _inclusion_corruptions(lh, index, size, proof, rt):
            assert not verify_inclusion(*probe), desc
        m = rng.randint(1, size)
        store.reads.clear()
        cproof = consistency_proof(m, size, store.get)
        assert len(store.reads) <= _log_bound(size)
        assert cproof == ref.proof(m, size)
        r1 = ref.mth(0, m)
        assert verify_consistency(m, size, r1, rt, cproof)
        if m < size:
            for desc, cprobe in _consistency_corruptions(m, size, r1, rt, cproof):
                assert not verify_consistency(*cprobe), desc


# --- append and TreeBuilder -------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=300),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=12),
)
def test_append_in_batches_equals_one_append(size: int, cuts: list[int]) -> None:
    ref = RefTree(_leaves(size))
    hashes = [leaf_hash(d) for d in ref.leaves]
    whole = _store_of(ref.leaves)

    batched = Store()
    bounds = sorted({0, size, *(c for c in cuts if c <= size)})
    for lo, hi in itertools.pairwise(bounds):
        batched.reads.clear()
        batched.insert(append(lo, hashes[lo:hi], batched.get))
        # Only the old right edge is read.
        assert set(batched.reads) <= set(compact_range(lo))
    batched.insert(append(size, [], batched.get))
    assert batched.nodes == whole.nodes
    # Exactly the perfect subtrees, each with its MTH.
    expected = {
        (level, index) for level in range(size.bit_length() + 1) for index in range(size >> level)
    }
    assert set(whole.nodes) == expected
    for (level, index), h in whole.nodes.items():
        assert h == ref.mth(index << level, (index + 1) << level)


def test_append_reads_only_the_right_edge_of_a_big_tree() -> None:
    store = Store()
    size = 0
    rng = random.Random(7)
    while size < 70_000:
        batch = rng.randint(1, 5000)
        store.reads.clear()
        store.insert(
            append(size, [leaf_hash(b"%d" % i) for i in range(size, size + batch)], store.get)
        )
        assert store.reads == compact_range(size)
        size += batch
    builder = TreeBuilder()
    builder.extend(leaf_hash(b"%d" % i) for i in range(size))
    assert root(size, store.get) == builder.root()


def test_tree_builder_matches_mth_at_every_size() -> None:
    ref = RefTree(_leaves(300))
    builder = TreeBuilder()
    assert builder.size == 0
    assert builder.root() == EMPTY_ROOT
    assert builder.compact_range() == []
    store = _store_of(ref.leaves)
    for i, data in enumerate(ref.leaves):
        builder.append(leaf_hash(data))
        assert builder.size == i + 1
        assert builder.root() == ref.mth(0, i + 1)
        edge = builder.compact_range()
        assert [(lv, ix) for lv, ix, _ in edge] == compact_range(i + 1)
        assert all(store.nodes[(lv, ix)] == h for lv, ix, h in edge)


def test_tree_builder_resumes_from_stored_edge() -> None:
    ref = RefTree(_leaves(1000))
    store = _store_of(ref.leaves)
    for start in (0, 1, 255, 256, 257, 999):
        resumed = TreeBuilder.from_compact_range(start, store.get)
        assert resumed.size == start
        assert resumed.root() == ref.mth(0, start)
        resumed.extend(leaf_hash(d) for d in ref.leaves[start:])
        assert resumed.root() == ref.mth(0, 1000)


def test_append_nodes_returns_what_append_stores() -> None:
    ref = RefTree(_leaves(37))
    builder = TreeBuilder()
    created: list[tuple[int, int, bytes]] = []
    for d in ref.leaves:
        created.extend(builder.append_nodes(leaf_hash(d)))
    assert {(lv, ix): h for lv, ix, h in created} == _store_of(ref.leaves).nodes


# --- bad input --------------------------------------------------------------------------------


def test_bad_arguments_are_refused() -> None:
    store = _store_of(_leaves(10))
    with pytest.raises(ValueError):
        inclusion_proof(10, 10, store.get)
    with pytest.raises(ValueError):
        inclusion_proof(-1, 10, store.get)
    with pytest.raises(ValueError):
        inclusion_proof(0, 0, store.get)
    with pytest.raises(ValueError):
        consistency_proof(6, 5, store.get)
    with pytest.raises(ValueError):
        root(-1, store.get)
    with pytest.raises(ValueError):
        TreeBuilder().append(b"short")
    with pytest.raises(ValueError, match="leaf 0"):
        append(0, [b"short"], store.get)


def test_a_corrupt_store_is_named() -> None:
    store = _store_of(_leaves(10))
    store.nodes[(3, 0)] = b"truncated"
    with pytest.raises(ValueError, match=r"\(3, 0\)"):
        root(10, store.get)
    with pytest.raises(ValueError, match=r"\(3, 0\)"):
        inclusion_proof(9, 10, store.get)


def test_verifiers_reject_malformed_input() -> None:
    ref = RefTree(_leaves(6))
    store = _store_of(ref.leaves)
    rt = ref.mth(0, 6)
    lh = leaf_hash(ref.leaves[2])
    proof = inclusion_proof(2, 6, store.get)
    assert verify_inclusion(lh, 2, 6, proof, rt)
    for index, size in [(0, 0), (6, 6), (-1, 6), (2, 0)]:
        assert not verify_inclusion(lh, index, size, proof, rt)
    assert not verify_inclusion(lh[:31], 2, 6, proof, rt)
    assert not verify_inclusion(lh, 2, 6, [p[:31] for p in proof], rt)
    with pytest.raises(ProofError):
        root_from_inclusion(lh, 2, 6, proof[:-1])
    with pytest.raises(ProofError):
        root_from_inclusion(lh, 6, 6, proof)
    cproof = consistency_proof(3, 6, store.get)
    assert verify_consistency(3, 6, ref.mth(0, 3), rt, cproof)
    assert not verify_consistency(3, 6, ref.mth(0, 3)[:31], rt, cproof)
    assert not verify_consistency(-1, 6, ref.mth(0, 3), rt, cproof)
    # A single-leaf tree: root == leaf hash, empty proof.
    one = leaf_hash(b"x")
    assert verify_inclusion(one, 0, 1, [], one)
    assert not verify_inclusion(one, 0, 1, [], SOME_HASH)
    assert not verify_inclusion(one, 0, 1, [one], one)


def test_module_exports() -> None:
    for name in merkle.__all__:
        assert hasattr(merkle, name), name
    get: Callable[[int, int], bytes] = _store_of(_leaves(3)).get
    assert isinstance(root(3, get), bytes)
