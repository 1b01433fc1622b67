"""The fixed vocabulary the workload draws from: countries and their currencies, tiers, contract types,
services, and the price bands that keep harmless promotions clear of every global price."""

from __future__ import annotations

from decimal import Decimal

# (country, local currency)
COUNTRIES = [("DE", "EUR"), ("FR", "EUR"), ("IT", "EUR"), ("ES", "EUR"), ("NL", "EUR"), ("AT", "EUR"),
             ("BE", "EUR"), ("PT", "EUR"), ("PL", "PLN"), ("CH", "CHF"), ("GB", "GBP"), ("SE", "SEK"),
             ("CZ", "CZK"), ("DK", "DKK"), ("US", "USD"), ("JP", "JPY")]
CURRENCY = dict(COUNTRIES)
KEY_TIERS = ["key", "key", "international_key", "international_key", "strategic", "corporate_strategic"]
CONTRACT_TYPES = ["framework", "supply", "service"]
SERVICES = ["installation", "maintenance", "training", "hotline", "logistics", "recycling", "consulting",
            "calibration", "spare-parts", "extended-warranty", "express-delivery", "onsite-support"]
GLOBAL_MAX = Decimal("500.00")   # global prices stay below this ...
PROMO_SAFE_MIN = 600             # ... and harmless all-customer promotions above it
