"""The test cases written in a policy's `tests` list, run against its own decisions (pure).

A case names a caller (principal and/or groups), a feature and the expected verdict: `allow`
(readable, no mask), `mask` (readable, a mask applies) or `deny`. The verdict comes from the same
`Access.decide` that serves calls, so a passing case is a promise about production behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

from .access import Access, Decision, Identity
from .catalog import Catalog
from .policy import Policy, PolicyTest


@dataclass(frozen=True)
class CaseResult:
    case: PolicyTest
    roles: tuple[str, ...]
    decision: Decision

    @property
    def got(self) -> str:
        return self.decision.verdict

    @property
    def passed(self) -> bool:
        return self.got == self.case.expect

    @property
    def description(self) -> str:
        """E.g. ``tests[1]: principal 'x' reading user_profile:email: expected deny, got allow``."""
        case = self.case
        return (
            f"tests[{case.index}]: {case.who} reading {case.feature}: "
            f"expected {case.expect}, got {self.got}"
        )


@dataclass(frozen=True)
class Report:
    results: tuple[CaseResult, ...]

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def summary(self) -> str:
        failed = len(self.failures)
        return f"{len(self.results) - failed} passed, {failed} failed"


def case_identity(case: PolicyTest) -> Identity:
    # A group-only case has no principal; "" cannot match a binding (the parser rejects an
    # empty principal), so the caller gets exactly the roles of its groups.
    return Identity(case.principal or "", case.groups, source="policy-test")


def run_case(access: Access, case: PolicyTest) -> CaseResult:
    roles = access.roles_of(case_identity(case))
    return CaseResult(case, roles, access.decide(roles, case.feature))


def run_tests(policy: Policy, access: Access | None = None) -> Report:
    """Every case of `policy.tests`, in file order."""
    if access is None:
        access = Access(policy, Catalog(policy))
    return Report(tuple(run_case(access, case) for case in policy.tests))
