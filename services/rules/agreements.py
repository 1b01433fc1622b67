"""Agreement conflict rules (CONTRACT §5): the findings that hold for one key account now.

The processor re-evaluates a key account whenever one of its events changes its state,
and compares the findings with the open alerts. Because the whole key account is judged
from its current state, the rules are symmetric (arrival order does not matter) and
self-healing (a finding that disappears resolves its alert).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from itertools import combinations

from services.domain import Agreement, Finding, KeyAccountView, Promotion, overlaps
from services.routing import country_recipients, global_assignee, people_recipients

GAP_THRESHOLD = Decimal("0.05")
DUPLICATE_GLOBAL_CONTRACT = "duplicate_global_contract"
LOCAL_PRICE_BELOW_GLOBAL = "local_price_below_global"
LOCAL_PRICE_ABOVE_GLOBAL = "local_price_above_global"
PROMOTION_UNDERCUTS_GLOBAL = "promotion_undercuts_global"
CONTRADICTING_SERVICE_TERMS = "contradicting_service_terms"
UNAUTHORIZED_COMMITMENT = "unauthorized_commitment"
#: the rules judged from a key account's standing agreements (CONTRACT §5); the others fire on an event
CONFLICT_RULES = (DUPLICATE_GLOBAL_CONTRACT, LOCAL_PRICE_BELOW_GLOBAL, LOCAL_PRICE_ABOVE_GLOBAL,
                  PROMOTION_UNDERCUTS_GLOBAL, CONTRADICTING_SERVICE_TERMS, UNAUTHORIZED_COMMITMENT)

def conflict_families(terms: dict) -> set[str]:
    """Which conflicts an agreement (or promotion) can take part in, by its terms (a row or event data).

    Prices meet prices and promotions of their product, services those of their service id, global
    contracts those of their type; every agreement its own `unauthorized_commitment`. Changes in
    different families of one key account cannot change each other's conflicts.
    """
    families = {f"a:{terms.get('agreement_id') or terms.get('promotion_id')}"}
    if terms.get("product_id"):
        families.add(f"p:{terms['product_id']}")
    if terms.get("service_id"):
        families.add(f"s:{terms['service_id']}")
    if terms.get("contract_type"):
        families.add(f"c:{terms['contract_type']}")
    return families


GLOBAL_RIGHTS = frozenset({"global_kam", "senior_kam", "executive_sponsor"})
LOCAL_RIGHTS = frozenset({"local_kam", "sales", "country_manager"})
CONCESSION_RIGHTS = frozenset({"global_kam", "senior_kam"})


def evaluate_key_account(view: KeyAccountView, today: date, fallback: str) -> list[Finding]:
    """Every conflict that holds for this key account today; empty if it is no key account."""
    if view.key_account.tier == "none":
        return []
    active = [a for a in view.agreements if a.is_active(today)]
    assignee = global_assignee(view.team, fallback)
    findings: list[Finding] = []
    findings += duplicate_global_contracts(view, active, assignee)
    findings += local_prices_against_global(view, active, assignee)
    findings += promotions_undercutting_global(view, active, today, assignee)
    findings += contradicting_service_terms(view, active, assignee)
    findings += unauthorized_commitments(view, active, assignee)
    return findings


def _finding(view: KeyAccountView, rule: str, parts: list[Agreement | Promotion], **kw) -> Finding:
    evidence = tuple(sorted(_id_of(p) for p in parts))
    versions = "|".join(sorted(_version_of(p) for p in parts))
    # The account concerned: the local side of a price conflict, the later of two contracts or services.
    account_id = next((p.account_id for p in reversed(parts) if isinstance(p, Agreement) and p.account_id),
                      view.key_account.account_id)
    return Finding(rule=rule, key_account_id=view.key_account.account_id, account_id=account_id,
                   evidence=evidence, versions=versions, **kw)


def _id_of(part: Agreement | Promotion) -> str:
    return part.agreement_id if isinstance(part, Agreement) else part.promotion_id


def _version_of(part: Agreement | Promotion) -> str:
    return part.version_tag if isinstance(part, Agreement) else f"{part.promotion_id}@promotion"


def _validity(a: Agreement | Promotion) -> str:
    return f"{a.valid_from} to {a.valid_to or 'open end'}"


def _gap(reference: Decimal, other: Decimal) -> Decimal:
    return (reference - other) / reference if reference else Decimal(0)


def duplicate_global_contracts(view: KeyAccountView, active: list[Agreement], assignee: str) -> list[Finding]:
    """Two signed global contracts of one type with overlapping validity: the customer has two frameworks."""
    contracts = sorted((a for a in active if a.kind == "contract" and a.scope == "global"), key=lambda a: a.agreement_id)
    out = []
    for a, b in combinations(contracts, 2):
        if a.contract_type != b.contract_type or not overlaps(a.valid_from, a.valid_to, b.valid_from, b.valid_to):
            continue
        out.append(_finding(
            view, DUPLICATE_GLOBAL_CONTRACT, [a, b], severity="critical", assignee=assignee,
            recipients=(assignee,),
            title=f"Two global {a.contract_type} contracts for {view.key_account.name}",
            detail=(f"{a.agreement_id} (agreed by {a.agreed_by}, {_validity(a)}) and {b.agreement_id} "
                    f"(agreed by {b.agreed_by}, {_validity(b)}) are both signed and overlap."),
            data={"contract_type": a.contract_type, "agreements": [_facts(a), _facts(b)]},
        ))
    return out


def local_prices_against_global(view: KeyAccountView, active: list[Agreement], assignee: str) -> list[Finding]:
    """A country's price for a product differs from the key account's global price."""
    globals_by_product = _global_prices(active)
    out = []
    for local in (a for a in active if a.kind == "price" and a.scope == "local"):
        for glob in globals_by_product.get((local.product_id, local.currency), []):
            if not overlaps(glob.valid_from, glob.valid_to, local.valid_from, local.valid_to) or local.price == glob.price:
                continue
            below = local.price < glob.price
            gap = _gap(glob.price, local.price)
            rule = LOCAL_PRICE_BELOW_GLOBAL if below else LOCAL_PRICE_ABOVE_GLOBAL
            severity = ("high" if gap >= GAP_THRESHOLD else "medium") if below else "high"
            word = "below" if below else "above"
            out.append(_finding(
                view, rule, [glob, local], severity=severity, assignee=assignee,
                recipients=country_recipients(view.team, assignee, local.country),
                title=f"{local.country} price for {local.product_id} is {word} the global price of {view.key_account.name}",
                detail=(f"Local {local.agreement_id} ({local.country}, agreed by {local.agreed_by}): "
                        f"{local.price} {local.currency}; global {glob.agreement_id} (agreed by {glob.agreed_by}): "
                        f"{glob.price} {glob.currency}; gap {abs(gap) * 100:.1f} %. "
                        f"Validity {_validity(local)} vs {_validity(glob)}."),
                data={"product_id": local.product_id, "currency": local.currency, "country": local.country,
                      "global": _facts(glob), "local": _facts(local), "gap_pct": str(round(abs(gap) * 100, 2))},
            ))
    return out


def promotions_undercutting_global(view: KeyAccountView, active: list[Agreement], today: date,
                                   assignee: str) -> list[Finding]:
    """A promotion for everyone in a country is cheaper than the key account's global price there."""
    globals_by_product = _global_prices(active)
    if not globals_by_product:
        return []
    countries = view.countries
    out = []
    for promo in view.promotions:
        globs = globals_by_product.get((promo.product_id, promo.currency))
        if (not globs or promo.audience != "all_customers" or promo.country not in countries
                or not promo.is_active(today)):
            continue
        for glob in globs:
            if promo.price >= glob.price or not overlaps(glob.valid_from, glob.valid_to, promo.valid_from, promo.valid_to):
                continue
            gap = _gap(glob.price, promo.price)
            out.append(_finding(
                view, PROMOTION_UNDERCUTS_GLOBAL, [glob, promo],
                severity="high" if gap >= GAP_THRESHOLD else "medium", assignee=assignee,
                recipients=country_recipients(view.team, assignee, promo.country),
                title=f"Promotion {promo.promotion_id} in {promo.country} undercuts {view.key_account.name}'s global price",
                detail=(f"Promotion {promo.promotion_id} (launched by {promo.launched_by}) sells {promo.product_id} "
                        f"at {promo.price} {promo.currency} to all customers in {promo.country} ({_validity(promo)}); "
                        f"global {glob.agreement_id} (agreed by {glob.agreed_by}) is {glob.price} {glob.currency}; "
                        f"gap {gap * 100:.1f} %."),
                data={"product_id": promo.product_id, "currency": promo.currency, "country": promo.country,
                      "global": _facts(glob), "promotion": _promotion_facts(promo), "gap_pct": str(round(gap * 100, 2))},
            ))
    return out


def contradicting_service_terms(view: KeyAccountView, active: list[Agreement], assignee: str) -> list[Finding]:
    """Two people agreed different terms for the same service: paid by one, free (or another price) by the other."""
    by_service: dict[str, list[Agreement]] = defaultdict(list)
    for a in active:
        if a.kind == "service":
            by_service[a.service_id].append(a)
    out = []
    for service_id, services in by_service.items():
        for a, b in combinations(sorted(services, key=lambda s: s.agreement_id), 2):
            if a.agreed_by == b.agreed_by or not overlaps(a.valid_from, a.valid_to, b.valid_from, b.valid_to):
                continue
            differ = a.charge != b.charge or (a.charge == "paid" and (a.price, a.currency) != (b.price, b.currency))
            if not differ:
                continue
            out.append(_finding(
                view, CONTRADICTING_SERVICE_TERMS, [a, b], severity="high", assignee=assignee,
                recipients=people_recipients(assignee, (a.agreed_by, b.agreed_by)),
                title=f"Contradicting terms for service {service_id} at {view.key_account.name}",
                detail=f"{_service_terms(a)}; {_service_terms(b)}; validity {_validity(a)} vs {_validity(b)}.",
                data={"service_id": service_id, "agreements": [_facts(a), _facts(b)]},
            ))
    return out


def unauthorized_commitments(view: KeyAccountView, active: list[Agreement], assignee: str) -> list[Finding]:
    """An agreement made by someone without the decision right for it."""
    out = []
    for a in active:
        if has_decision_right(view, a):
            continue
        roles = ", ".join(sorted(m.role for m in view.team.roles_of(a.agreed_by or ""))) or "not in the team"
        out.append(_finding(
            view, UNAUTHORIZED_COMMITMENT, [a], severity="medium", assignee=assignee, recipients=(assignee,),
            title=f"{a.agreed_by} committed {a.agreement_id} for {view.key_account.name} without the right",
            detail=f"{describe(a)} was agreed by {a.agreed_by} ({roles}), who may not agree it.",
            data={"agreement": _facts(a), "agreed_by_roles": roles},
        ))
    return out


def has_decision_right(view: KeyAccountView, agreement: Agreement) -> bool:
    """Decision rights of CONTRACT §5; anyone outside the key account's team has none."""
    roles = view.team.roles_of(agreement.agreed_by or "")
    if agreement.kind == "service":
        if agreement.charge == "paid":
            return bool(roles)
        return any(m.role in CONCESSION_RIGHTS for m in roles)
    if any(m.role in GLOBAL_RIGHTS for m in roles):
        return True
    return agreement.scope == "local" and any(
        m.role in LOCAL_RIGHTS and m.country == agreement.country for m in roles)


def _global_prices(active: list[Agreement]) -> dict[tuple[str, str], list[Agreement]]:
    out: dict[tuple[str, str], list[Agreement]] = defaultdict(list)
    for a in active:
        if a.kind == "price" and a.scope == "global":
            out[(a.product_id, a.currency)].append(a)
    return out


def _service_terms(a: Agreement) -> str:
    terms = f"{a.price} {a.currency}" if a.charge == "paid" else "free"
    return f"{a.agreement_id} agreed by {a.agreed_by}: {terms}"


def describe(a: Agreement) -> str:
    """An agreement in a few words, for titles and details."""
    if a.kind == "price":
        return f"{a.scope} price {a.agreement_id} for {a.product_id} ({a.price} {a.currency})"
    if a.kind == "contract":
        return f"{a.scope} {a.contract_type} contract {a.agreement_id}"
    return f"{a.charge} service {a.agreement_id} ({a.service_id})"


def _facts(a: Agreement) -> dict:
    facts = {"agreement_id": a.agreement_id, "version": a.version, "account_id": a.account_id,
             "agreed_by": a.agreed_by, "valid_from": str(a.valid_from), "valid_to": a.valid_to and str(a.valid_to)}
    for name in ("scope", "country", "product_id", "contract_type", "service_id", "charge", "currency"):
        if getattr(a, name) is not None:
            facts[name] = getattr(a, name)
    if a.price is not None:
        facts["price"] = str(a.price)
    return facts


def _promotion_facts(p: Promotion) -> dict:
    return {"promotion_id": p.promotion_id, "country": p.country, "price": str(p.price), "currency": p.currency,
            "valid_from": str(p.valid_from), "valid_to": str(p.valid_to), "launched_by": p.launched_by}
