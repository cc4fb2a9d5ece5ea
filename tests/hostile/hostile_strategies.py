"""Hypothesis strategies the hostile-input suite shares: mutated bytes, mutated YAML, JSON-like
documents."""

from __future__ import annotations

from hypothesis import strategies as st


def mutated_bytes(seed: bytes) -> st.SearchStrategy[bytes]:
    """`seed` with bytes flipped, cut, inserted or duplicated."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 6))):
            op = draw(st.sampled_from(("flip", "cut", "insert", "repeat")))
            at = draw(st.integers(0, len(data)))
            if op == "flip" and data:
                at = min(at, len(data) - 1)
                data[at] ^= draw(st.integers(1, 255))
            elif op == "cut":
                del data[at:]
            elif op == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            else:
                data += data[at:]
        return bytes(data)

    return mutate()


# Values a careless or hostile author puts where a scalar belongs.
HOSTILE_SCALARS = (
    "~",
    "''",
    "[]",
    "{}",
    "-1",
    "0",
    "0.5",
    "1" * 5000,
    "99999999999999999999",
    "9223372036854775808",
    ".nan",
    ".inf",
    "-.inf",
    "1.0e+400",
    "5.0e-324",
    "99999999999999w",
    "0.000000001s",
    "-5d",
    "!!binary AAAA",
    "!!timestamp 2020-99-99",
    "!!timestamp nonsense",
    "2020-13-45",
    "!!int abc",
    "!!int ''",
    "!!float ''",
    "!!bool maybe",
    "!!map scalar",
    "!!seq scalar",
    "!!set {a, b}",
    "!!omap [a, b]",
    "!!python/object/apply:os.system [echo pwned]",
    "*nowhere",
    "&anchor value",
    "{<<: [1]}",
    '"\\0\\x01\\uFFFF"',
    '"\\uD800"',
    "yes",
    "null",
    "\u00e9\u4e2d\U0001f600",
    '"' + "\u00e9" * 3000 + '"',
    "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]",
    "{a: 1, a: 2}",
    "[*:*]",
    '"tag:"',
    '"service:nope"',
    '"view:"',
    "'*:*'",
)


@st.composite
def mutated_source(draw: st.DrawFn, text: str) -> str:
    """YAML `text` with a few lines deleted, duplicated, swapped, re-indented, cut or given a
    hostile value."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        op = draw(
            st.sampled_from(
                (
                    "value",
                    "value",
                    "value",
                    "delete",
                    "duplicate",
                    "swap",
                    "indent",
                    "insert",
                    "cut",
                )
            )
        )
        line = lines[at]
        if op == "value" and ":" in line:
            head = line[: line.index(":") + 1]
            lines[at] = f"{head} {draw(st.sampled_from(HOSTILE_SCALARS))}"
        elif op == "delete":
            del lines[at]
        elif op == "duplicate":
            lines.insert(at, line)
        elif op == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif op == "indent":
            lines[at] = draw(st.sampled_from(("  ", "    ", "\t", ""))) + line.lstrip()
        elif op == "insert":
            lines.insert(at, draw(st.text(max_size=60)))
        elif op == "cut":
            lines = [*lines[:at], line[: draw(st.integers(0, len(line)))]]
    return "\n".join(lines) + "\n"


json_like = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(("version", "catalog", "views", "features", "*:*", "tag:pii")),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    ("version", "project", "catalog", "entities", "views", "name", "type", "x-a")
                ),
                st.text(max_size=10),
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=30,
)
