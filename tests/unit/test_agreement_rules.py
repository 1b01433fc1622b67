"""Agreement conflict rules of CONTRACT §5 at their edges, as pure functions over a KeyAccountView."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from services.domain import Account, Agreement, KeyAccountView, Promotion, Team, TeamMember, overlaps
from services.rules.agreements import evaluate_key_account, has_decision_right

TODAY = date(2027, 1, 15)
FALLBACK = "kam-desk"
KA = "ACME"

TEAM = Team((
    TeamMember("gk", "global_kam"),
    TeamMember("sen", "senior_kam"),
    TeamMember("es", "executive_sponsor"),
    TeamMember("lk-it", "local_kam", "IT"),
    TeamMember("lk-de", "local_kam", "DE"),
    TeamMember("cm-it", "country_manager", "IT"),
    TeamMember("sales-it", "sales", "IT"),
    TeamMember("tech", "technical"),
    TeamMember("fin", "finance"),
))


def accounts(tier: str = "international_key") -> dict[str, Account]:
    return {
        KA: Account(KA, "ACME Group", None, "DE", tier, KA),
        "ACME-IT": Account("ACME-IT", "ACME Italia", KA, "IT", "none", KA),
        "ACME-FR": Account("ACME-FR", "ACME France", KA, "FR", "none", KA),
    }


def view(*agreements: Agreement, promotions: tuple[Promotion, ...] = (), tier: str = "international_key",
         team: Team = TEAM) -> KeyAccountView:
    accts = accounts(tier)
    return KeyAccountView(accts[KA], accts, team, tuple(agreements), promotions)


def d(s: str | None) -> date | None:
    return date.fromisoformat(s) if s else None


def price(aid: str, scope: str, amount: str, *, country: str | None = None, product: str = "P1",
          currency: str = "EUR", frm: str = "2027-01-01", to: str | None = "2027-12-31", by: str = "gk",
          version: int = 1, account: str | None = None) -> Agreement:
    if scope == "local" and country is None:
        country = "IT"
    if account is None:
        account = "ACME-IT" if scope == "local" else KA
    if scope == "local" and by == "gk":
        by = "lk-it"
    return Agreement(aid, version, "price", account, by, d(frm), d(to), scope=scope, country=country,
                     product_id=product, price=Decimal(amount), currency=currency)


def contract(aid: str, *, scope: str = "global", ctype: str = "framework", status: str = "signed",
             frm: str = "2027-01-01", to: str | None = "2027-12-31", by: str = "gk", country: str | None = None,
             version: int = 1) -> Agreement:
    return Agreement(aid, version, "contract", KA if scope == "global" else "ACME-IT", by, d(frm), d(to),
                     scope=scope, country=country, contract_type=ctype, status=status)


def service(aid: str, *, charge: str = "paid", amount: str | None = "100.00", currency: str | None = "EUR",
            by: str = "gk", service_id: str = "S1", frm: str = "2027-01-01", to: str | None = "2027-12-31",
            version: int = 1) -> Agreement:
    if charge == "free":
        amount = currency = None
    return Agreement(aid, version, "service", KA, by, d(frm), d(to), service_id=service_id, charge=charge,
                     price=Decimal(amount) if amount is not None else None, currency=currency)


def withdrawn(a: Agreement) -> Agreement:
    return Agreement(a.agreement_id, a.version + 1, "withdrawal", a.account_id, a.agreed_by, a.valid_from,
                     a.valid_to, scope=a.scope, country=a.country, product_id=a.product_id, price=a.price,
                     currency=a.currency, contract_type=a.contract_type, status=a.status)


def promo(pid: str, amount: str, *, country: str = "IT", audience: str = "all_customers", product: str = "P1",
          currency: str = "EUR", frm: str = "2027-01-10", to: str = "2027-01-31") -> Promotion:
    return Promotion(pid, country, product, Decimal(amount), currency, d(frm), d(to), audience, "marketing")


def findings(v: KeyAccountView, rule: str | None = None):
    out = evaluate_key_account(v, TODAY, FALLBACK)
    return [f for f in out if rule is None or f.rule == rule]


def fps(v: KeyAccountView, rule: str | None = None) -> set[str]:
    return {f.fingerprint for f in findings(v, rule)}


# -- overlap --------------------------------------------------------------------------------

def test_overlap_is_inclusive_and_open_ended():
    assert overlaps(d("2027-01-01"), d("2027-03-31"), d("2027-03-31"), d("2027-06-30"))
    assert not overlaps(d("2027-01-01"), d("2027-03-30"), d("2027-03-31"), d("2027-06-30"))
    assert overlaps(d("2027-01-01"), None, d("2030-01-01"), None)
    assert overlaps(d("2027-01-01"), None, d("2026-01-01"), d("2027-01-01"))
    assert not overlaps(d("2027-01-02"), None, d("2026-01-01"), d("2027-01-01"))


# -- duplicate_global_contract ----------------------------------------------------------------

def test_duplicate_global_contract_touching_dates_overlap():
    v = view(contract("C-B", to="2027-03-31"), contract("C-A", frm="2027-03-31", to=None))
    (f,) = findings(v, "duplicate_global_contract")
    assert f.fingerprint == f"duplicate_global_contract:{KA}:C-A|C-B"
    assert f.severity == "critical"
    assert f.assignee == "gk"
    assert f.evidence == ("C-A", "C-B")


def test_duplicate_global_contract_one_day_apart_does_not_overlap():
    v = view(contract("C-A", to="2027-03-30"), contract("C-B", frm="2027-03-31", to=None))
    assert findings(v, "duplicate_global_contract") == []


def test_duplicate_global_contract_open_ended_overlaps_later_contract():
    v = view(contract("C-A", frm="2020-01-01", to=None), contract("C-B", frm="2031-01-01", to="2031-12-31"))
    assert len(findings(v, "duplicate_global_contract")) == 1


@pytest.mark.parametrize("other", [
    contract("C-B", status="draft"),
    contract("C-B", status="terminated"),
    contract("C-B", ctype="supply"),
    contract("C-B", scope="local", country="IT", by="lk-it"),
    contract("C-B", frm="2026-01-01", to="2027-01-14"),  # expired yesterday
    withdrawn(contract("C-B")),
], ids=["draft", "terminated", "other-type", "local", "expired", "withdrawn"])
def test_duplicate_global_contract_needs_two_active_signed_global_of_one_type(other):
    assert findings(view(contract("C-A"), other), "duplicate_global_contract") == []


def test_contract_ending_today_is_still_active():
    v = view(contract("C-A", frm="2026-01-01", to="2027-01-15"), contract("C-B"))
    assert len(findings(v, "duplicate_global_contract")) == 1


def test_three_overlapping_contracts_give_three_pairs():
    v = view(contract("C-C"), contract("C-A"), contract("C-B"))
    assert fps(v, "duplicate_global_contract") == {
        f"duplicate_global_contract:{KA}:C-A|C-B", f"duplicate_global_contract:{KA}:C-A|C-C",
        f"duplicate_global_contract:{KA}:C-B|C-C"}


# -- local price vs global price --------------------------------------------------------------

@pytest.mark.parametrize("local, severity", [
    ("95.00", "high"),      # gap exactly 5 %
    ("94.99", "high"),
    ("95.01", "medium"),    # gap 4.99 %
    ("99.99", "medium"),
    ("0.00", "high"),
])
def test_local_price_below_global_threshold(local, severity):
    v = view(price("G1", "global", "100.00"), price("L1", "local", local))
    (f,) = findings(v, "local_price_below_global")
    assert f.severity == severity
    assert f.fingerprint == f"local_price_below_global:{KA}:G1|L1"
    assert f.assignee == "gk"
    assert f.recipients == ("cm-it", "gk", "lk-it")
    assert findings(v, "local_price_above_global") == []


def test_threshold_with_non_round_global_price():
    # 5 % of 19.99 is 0.9995: 18.99 is a gap of 1.00 (>= 5 %), 19.00 a gap of 0.99 (< 5 %)
    assert findings(view(price("G1", "global", "19.99"), price("L1", "local", "18.99")),
                    "local_price_below_global")[0].severity == "high"
    assert findings(view(price("G1", "global", "19.99"), price("L1", "local", "19.00")),
                    "local_price_below_global")[0].severity == "medium"


@pytest.mark.parametrize("local", ["100.01", "105.00", "1000.00"])
def test_local_price_above_global_always_high(local):
    v = view(price("G1", "global", "100.00"), price("L1", "local", local))
    (f,) = findings(v, "local_price_above_global")
    assert f.severity == "high"
    assert f.fingerprint == f"local_price_above_global:{KA}:G1|L1"
    assert findings(v, "local_price_below_global") == []


def test_equal_local_and_global_price_is_no_conflict():
    v = view(price("G1", "global", "100.00"), price("L1", "local", "100.0"))
    assert findings(v) == []


def test_price_currency_mismatch_ignored():
    v = view(price("G1", "global", "100.00", currency="EUR"), price("L1", "local", "50.00", currency="USD"))
    assert findings(v) == []


def test_price_other_product_ignored():
    v = view(price("G1", "global", "100.00", product="P1"), price("L1", "local", "50.00", product="P2"))
    assert findings(v) == []


def test_price_touching_validity_overlaps_one_day_apart_does_not():
    assert len(findings(view(price("G1", "global", "100.00", to="2027-06-30"),
                             price("L1", "local", "90.00", frm="2027-06-30", to=None)),
                        "local_price_below_global")) == 1
    assert findings(view(price("G1", "global", "100.00", to="2027-06-29"),
                         price("L1", "local", "90.00", frm="2027-06-30", to=None))) == []


@pytest.mark.parametrize("which", ["global", "local"])
def test_price_inactive_withdrawn_or_expired_ignored(which):
    g, loc = price("G1", "global", "100.00"), price("L1", "local", "90.00")
    if which == "global":
        g = withdrawn(g)
    else:
        loc = withdrawn(loc)
    assert findings(view(g, loc)) == []
    g, loc = price("G1", "global", "100.00"), price("L1", "local", "90.00")
    expired = dict(frm="2026-01-01", to="2027-01-14")
    if which == "global":
        g = price("G1", "global", "100.00", **expired)
    else:
        loc = price("L1", "local", "90.00", **expired)
    assert findings(view(g, loc)) == []


def test_two_global_prices_and_two_local_prices_give_each_pair():
    v = view(price("G1", "global", "100.00"), price("G2", "global", "80.00"),
             price("L1", "local", "90.00"), price("L2", "local", "90.00", country="FR", by="sen", account="ACME-FR"))
    assert fps(v) == {f"local_price_below_global:{KA}:G1|L1", f"local_price_below_global:{KA}:G1|L2",
                      f"local_price_above_global:{KA}:G2|L1", f"local_price_above_global:{KA}:G2|L2"}


# -- promotions -------------------------------------------------------------------------------

@pytest.mark.parametrize("amount, severity", [("95.00", "high"), ("95.01", "medium"), ("10.00", "high")])
def test_promotion_undercuts_global(amount, severity):
    v = view(price("G1", "global", "100.00"), promotions=(promo("PR1", amount),))
    (f,) = findings(v, "promotion_undercuts_global")
    assert f.severity == severity
    assert f.fingerprint == f"promotion_undercuts_global:{KA}:G1|PR1"
    assert f.recipients == ("cm-it", "gk", "lk-it")


@pytest.mark.parametrize("p", [
    promo("PR1", "50.00", audience="segment"),
    promo("PR1", "50.00", country="ES"),               # no account of ACME in ES
    promo("PR1", "50.00", currency="USD"),
    promo("PR1", "50.00", product="P2"),
    promo("PR1", "100.00"),                            # not below
    promo("PR1", "150.00"),
    promo("PR1", "50.00", frm="2026-01-01", to="2027-01-14"),  # over before today
], ids=["segment", "foreign-country", "currency", "product", "equal", "above", "expired"])
def test_promotion_ignored(p):
    assert findings(view(price("G1", "global", "100.00"), promotions=(p,))) == []


def test_promotion_in_country_of_the_key_account_root_counts():
    v = view(price("G1", "global", "100.00"), promotions=(promo("PR1", "50.00", country="DE"),))
    assert len(findings(v, "promotion_undercuts_global")) == 1


def test_promotion_validity_must_overlap_global_price():
    v = view(price("G1", "global", "100.00", frm="2027-02-01"), promotions=(promo("PR1", "50.00", to="2027-01-31"),))
    assert findings(v) == []
    v = view(price("G1", "global", "100.00", frm="2027-01-31"), promotions=(promo("PR1", "50.00", to="2027-01-31"),))
    assert len(findings(v, "promotion_undercuts_global")) == 1


def test_promotion_ignores_local_prices():
    v = view(price("L1", "local", "100.00"), promotions=(promo("PR1", "50.00"),))
    assert findings(v) == []


# -- contradicting_service_terms --------------------------------------------------------------

@pytest.mark.parametrize("a, b", [
    (service("SV-A", charge="paid", by="gk"), service("SV-B", charge="free", by="sen")),
    (service("SV-A", amount="100.00", by="gk"), service("SV-B", amount="90.00", by="tech")),
    (service("SV-A", currency="EUR", by="gk"), service("SV-B", currency="USD", by="tech")),
], ids=["paid-vs-free", "price", "currency"])
def test_service_terms_conflict(a, b):
    (f,) = findings(view(a, b), "contradicting_service_terms")
    assert f.fingerprint == f"contradicting_service_terms:{KA}:SV-A|SV-B"
    assert f.severity == "high"
    assert f.assignee == "gk"
    assert f.recipients == tuple(sorted({"gk", a.agreed_by, b.agreed_by}))


@pytest.mark.parametrize("a, b", [
    (service("SV-A", charge="paid", by="gk"), service("SV-B", charge="free", by="gk")),      # same person
    (service("SV-A", amount="100.00", by="gk"), service("SV-B", amount="100.0", by="tech")),  # same terms
    (service("SV-A", charge="free", by="gk"), service("SV-B", charge="free", by="sen")),      # both free
    (service("SV-A", by="gk"), service("SV-B", charge="free", by="sen", service_id="S2")),   # other service
    (service("SV-A", by="gk", to="2027-03-30"), service("SV-B", charge="free", by="sen", frm="2027-03-31")),
    (service("SV-A", by="gk"), withdrawn(service("SV-B", charge="free", by="sen"))),
], ids=["same-person", "same-terms", "both-free", "other-service", "no-overlap", "withdrawn"])
def test_service_terms_no_conflict(a, b):
    assert findings(view(a, b), "contradicting_service_terms") == []


def test_service_terms_touching_dates_conflict():
    v = view(service("SV-A", by="gk", to="2027-03-31"), service("SV-B", charge="free", by="sen", frm="2027-03-31"))
    assert len(findings(v, "contradicting_service_terms")) == 1


def test_service_recipients_include_agreeing_people_outside_team():
    v = view(service("SV-A", by="outsider"), service("SV-B", charge="free", by="sen"))
    (f,) = findings(v, "contradicting_service_terms")
    assert f.recipients == ("gk", "outsider", "sen")


# -- decision rights ------------------------------------------------------------------------

GLOBAL_OK = ["gk", "sen", "es"]
GLOBAL_NOT = ["lk-it", "cm-it", "sales-it", "tech", "fin", "outsider"]
LOCAL_IT_OK = ["gk", "sen", "es", "lk-it", "cm-it", "sales-it"]
LOCAL_IT_NOT = ["lk-de", "tech", "fin", "outsider"]


def _right(a: Agreement) -> bool:
    return has_decision_right(view(a), a)


@pytest.mark.parametrize("by", GLOBAL_OK + GLOBAL_NOT)
def test_decision_rights_global_price_and_contract(by):
    expected = by in GLOBAL_OK
    assert _right(price("G1", "global", "100.00", by=by)) is expected
    assert _right(contract("C1", by=by)) is expected


@pytest.mark.parametrize("by", LOCAL_IT_OK + LOCAL_IT_NOT)
def test_decision_rights_local_price_and_contract_need_country_match(by):
    expected = by in LOCAL_IT_OK
    p = Agreement("L1", 1, "price", "ACME-IT", by, d("2027-01-01"), None, scope="local", country="IT",
                  product_id="P1", price=Decimal("1"), currency="EUR")
    assert _right(p) is expected
    assert _right(contract("C1", scope="local", country="IT", by=by)) is expected


def test_local_role_with_country_gives_no_right_in_other_country():
    p = Agreement("L1", 1, "price", "ACME-FR", "lk-it", d("2027-01-01"), None, scope="local", country="FR",
                  product_id="P1", price=Decimal("1"), currency="EUR")
    assert not _right(p)


@pytest.mark.parametrize("by", ["gk", "sen", "es", "lk-it", "lk-de", "cm-it", "sales-it", "tech", "fin"])
def test_decision_rights_paid_service_any_member(by):
    assert _right(service("SV", by=by))


@pytest.mark.parametrize("by, expected", [
    ("gk", True), ("sen", True), ("es", False), ("lk-it", False), ("cm-it", False), ("sales-it", False),
    ("tech", False), ("fin", False), ("outsider", False)])
def test_decision_rights_free_service_only_global_or_senior_kam(by, expected):
    assert _right(service("SV", charge="free", by=by)) is expected


def test_paid_service_by_non_member_has_no_right():
    assert not _right(service("SV", by="outsider"))


def test_unauthorized_commitment_finding():
    v = view(price("G1", "global", "100.00", by="lk-it"))
    (f,) = findings(v)
    assert f.rule == "unauthorized_commitment"
    assert f.fingerprint == f"unauthorized_commitment:{KA}:G1"
    assert f.severity == "medium"
    assert f.assignee == "gk"
    assert f.evidence == ("G1",)


def test_unauthorized_commitment_only_for_active_agreements():
    assert findings(view(withdrawn(price("G1", "global", "100.00", by="outsider")))) == []
    assert findings(view(contract("C1", by="outsider", status="draft"))) == []


def test_removed_member_loses_right():
    team = Team(tuple(m for m in TEAM.members if m.person_id != "gk"))
    v = view(price("G1", "global", "100.00", by="gk"), team=team)
    (f,) = findings(v)
    assert f.rule == "unauthorized_commitment"
    assert f.assignee == "sen"


# -- key account and fingerprints -------------------------------------------------------------

def test_tier_none_gives_no_findings():
    v = view(contract("C-A", by="outsider"), contract("C-B"), price("G1", "global", "100.00"),
             price("L1", "local", "50.00"), service("SV-A"), service("SV-B", charge="free", by="tech"),
             promotions=(promo("PR1", "1.00"),), tier="none")
    assert findings(v) == []


def test_findings_go_to_fallback_without_global_or_senior_kam():
    team = Team((TeamMember("es", "executive_sponsor"),))
    v = view(contract("C-A", by="es"), contract("C-B", by="es"), team=team)
    (f,) = findings(v)
    assert f.assignee == FALLBACK


def test_fingerprint_sorts_evidence_whatever_the_order():
    a = view(price("Z-GLOBAL", "global", "100.00"), price("A-LOCAL", "local", "90.00"))
    b = view(price("A-LOCAL", "local", "90.00"), price("Z-GLOBAL", "global", "100.00"))
    (fa,), (fb,) = findings(a), findings(b)
    assert fa.fingerprint == fb.fingerprint == f"local_price_below_global:{KA}:A-LOCAL|Z-GLOBAL"
    assert list(fa.evidence) == sorted(fa.evidence)


def test_versions_identify_the_agreement_versions():
    v = view(contract("C-A", version=3), contract("C-B", version=1))
    (f,) = findings(v)
    assert f.versions == "C-A@3|C-B@1"


def test_findings_are_independent_of_agreement_order():
    parts = [contract("C-A"), contract("C-B"), price("G1", "global", "100.00"), price("L1", "local", "97.00"),
             service("SV-A"), service("SV-B", charge="free", by="sen"), price("G2", "global", "5.00", by="tech")]
    forward = sorted((f.fingerprint, f.severity, f.versions) for f in findings(view(*parts)))
    backward = sorted((f.fingerprint, f.severity, f.versions) for f in findings(view(*reversed(parts))))
    assert forward == backward
    assert len(forward) == 5  # contracts, local below G1, local above G2, services, unauthorized G2
