"""erp.agreements: versioned agreements with a key account (CONTRACT §3, §4)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, model_validator

from .base import InputModel
from .types import Country, Currency, Id, Money, StrictDate, Text, Version

__all__ = [
    "Scope",
    "ContractType",
    "ContractStatus",
    "Charge",
    "PriceAgreed",
    "ContractNegotiated",
    "ServiceAgreed",
    "AgreementWithdrawn",
]

Scope = Literal["global", "local"]
ContractType = Literal["framework", "supply", "service"]
ContractStatus = Literal["draft", "signed", "terminated"]
Charge = Literal["paid", "free"]


class _Agreement(InputModel):
    agreement_id: Id
    version: Version
    account_id: Id
    valid_from: StrictDate
    valid_to: StrictDate | None = None
    agreed_by: Id

    @model_validator(mode="after")
    def _check_validity(self):
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to: must not be before valid_from")
        return self


class _ScopedAgreement(_Agreement):
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"scope": {"const": "local"}}, "required": ["scope"]},
                    "then": {"properties": {"country": {"type": "string"}}, "required": ["country"]},
                    "else": {"properties": {"country": {"type": "null"}}},
                }
            ]
        }
    )
    scope: Scope
    country: Country | None = None

    @model_validator(mode="after")
    def _check_scope(self):
        if self.scope == "local" and self.country is None:
            raise ValueError("country: required when scope is 'local'")
        if self.scope == "global" and self.country is not None:
            raise ValueError("country: must be null when scope is 'global'")
        return self


class PriceAgreed(_ScopedAgreement):
    """``price.agreed``"""

    product_id: Id
    price: Money
    currency: Currency


class ContractNegotiated(_ScopedAgreement):
    """``contract.negotiated``"""

    contract_type: ContractType
    status: ContractStatus
    region: Text | None = None


class ServiceAgreed(_Agreement):
    """``service.agreed``"""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"charge": {"const": "paid"}}, "required": ["charge"]},
                    "then": {
                        "properties": {"price": {"type": "string"}, "currency": {"type": "string"}},
                        "required": ["price", "currency"],
                    },
                    "else": {"properties": {"price": {"type": "null"}, "currency": {"type": "null"}}},
                }
            ]
        }
    )

    service_id: Id
    charge: Charge
    price: Money | None = None
    currency: Currency | None = None

    @model_validator(mode="after")
    def _check_charge(self):
        if self.charge == "paid":
            for name in ("price", "currency"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name}: required when charge is 'paid'")
        else:
            for name in ("price", "currency"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: must be null when charge is 'free'")
        return self


class AgreementWithdrawn(InputModel):
    """``agreement.withdrawn``"""

    agreement_id: Id
    version: Version
    withdrawn_by: Id
