"""The KPI report (`onevoice report`): how the key-account programme handles its exceptions."""

from services.report.build import build_report

__all__ = ["build_report"]
