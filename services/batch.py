"""What one transaction does: the alert lifecycle, instructions, notices and dead letters it writes.

A `Batch` collects every change a batch of events causes (alert rows, their history, outbox
messages, notices, decision outcomes) and which key accounts must be judged again, so the
processor can write them all in one round trip at commit. The message shapes and ids come
from services/outputs.py; this module decides *when* a message is due.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from services.config import Settings
from services.domain import Finding, iso, utcnow
from services.inputs import InputRecord
from services.outputs import (ALERTS_TOPIC, DLQ_TOPIC, INSTRUCTIONS_TOPIC, NOTICES_TOPIC, OUTPUT_VALUE_LIMIT,
                              alert_message, dead_letter_value, fit_output, instruction_message, notice_message,
                              output_id)
from services.store import tables as t
from services.store.bulk import bulk_insert_later, pipelined, send_commit
from services.store.state import StateRepository, add_to_counters, dumps, new_alert_row

DUE_SEVERITIES = frozenset({"high", "critical"})
#: what the store keeps of each batch besides its state: (attribute, table, conflict key of a row written twice)
_RECORDS = (("history", t.alert_history, None), ("notices", t.notices, ("notice_id",)),
            ("decision_outcomes", t.decision_outcomes, ("source", "event_id")))


@dataclass
class BatchResult:
    """What a batch did: counters for the ops stream, and the outputs it committed to the outbox."""

    processed: int = 0
    duplicates: int = 0
    stale: int = 0
    dead_letters: int = 0
    unknown_accounts: int = 0
    escalations: int = 0
    retries: int = 0
    outputs: int = 0
    committed_outputs: list[tuple] = field(default_factory=list)  # (outbox id, topic, key, value) in id order

    def counters(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k not in ("outputs", "committed_outputs")}


@dataclass
class Batch:
    """What one transaction has done so far: outputs to write and key accounts to judge."""

    repo: StateRepository
    now: datetime
    decision_window_s: float
    result: BatchResult = field(default_factory=BatchResult)
    outbox: list[dict] = field(default_factory=list)
    dirty: dict[str, str] = field(default_factory=dict)  # key account -> the event that last changed it
    # key account -> agreement (or promotion) changed, if only those -> (order, the event that changed it)
    changed: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)
    touches: int = 0  # orders the changes of `changed`
    whole: set[str] = field(default_factory=set)  # key accounts to judge whole (team, hierarchy, promotion)
    reread: set[str] = field(default_factory=set)  # key accounts whose accounts changed in this transaction
    locked: set[str] = field(default_factory=set)
    history: list[dict] = field(default_factory=list)  # alert status changes
    decision_outcomes: list[dict] = field(default_factory=list)
    notices: list[dict] = field(default_factory=list)
    now_iso: str = field(init=False)  # every output carries it: formatted once

    def __post_init__(self) -> None:
        self.now_iso = iso(self.now)

    # -- what must be judged again ----------------------------------------------------------

    def touch(self, root_id: str | None, caused_by: str, *, accounts_changed: bool = True) -> None:
        """The key account changed as a whole: judge all of it.

        Where its accounts changed, its state is read again from the store (a cached one knows nothing
        of them); a team change leaves the state as it is (teams are read apart), so it is not.
        """
        if root_id is not None:
            self.dirty[root_id] = caused_by
            self.whole.add(root_id)
            if accounts_changed:
                self.reread.add(root_id)

    def touch_agreement(self, root_id: str | None, caused_by: str, agreement_id: str) -> None:
        """Only this agreement (or promotion) changed: judge the conflicts it can take part in.

        Several events of one key account may share a wave when their conflict families differ
        (services/handlers.ORDERING_KEYS); each finding is then owed to its own event (`cause`).
        """
        if root_id is not None:
            self.dirty[root_id] = caused_by
            self.touches += 1
            self.changed.setdefault(root_id, {})[agreement_id] = (self.touches, caused_by)

    def cause(self, root: str, evidence) -> str:
        """The event a finding or alert of this key account is owed to: the last to change its evidence."""
        changed = self.changed.get(root)
        if root in self.whole or not changed:
            return self.dirty[root]
        causes = [changed[i] for i in evidence if i in changed]
        return max(causes)[1] if causes else self.dirty[root]

    def judged(self) -> None:
        """Every key account touched so far has been judged."""
        self.dirty.clear()
        self.changed.clear()
        self.whole.clear()

    # -- alerts -----------------------------------------------------------------------------

    def due_at(self, severity: str) -> str | None:
        if severity not in DUE_SEVERITIES:
            return None
        return iso(self.now + timedelta(seconds=self.decision_window_s))

    def open_alert(self, finding: Finding, caused_by: str, *, ref_id: str | None = None,
                   awaiting_decision: bool = False) -> str | None:
        """Open an alert for a finding; None where one with its fingerprint is open for the same reference."""
        if ref_id is not None and any(a["fingerprint"] == finding.fingerprint
                                      for a in self.repo.open_alerts_for(finding.rule, ref_id)):
            return None  # one open alert per fingerprint: a repeated dunning or shortage adds none
        alert_id = output_id(f"{finding.fingerprint}#{caused_by}")
        row = new_alert_row(
            alert_id=alert_id, fingerprint=finding.fingerprint, rule=finding.rule, severity=finding.severity,
            status="open", key_account_id=finding.key_account_id, account_id=finding.account_id, title=finding.title,
            detail=finding.detail, evidence=dumps(list(finding.evidence)), assignee=finding.assignee,
            recipients=dumps(list(finding.recipients)), due_at=self.due_at(finding.severity), caused_by=caused_by,
            created_at=self.now_iso, updated_at=self.now_iso, data=dumps(finding.data), versions=finding.versions,
            awaiting_decision=awaiting_decision, ref_id=ref_id)
        self.repo.put(t.alerts, row)
        for evidence_id in finding.evidence:
            self.repo.put(t.alert_evidence, {"alert_id": alert_id, "evidence_id": evidence_id})
        self._record_history(row)
        self.emit(ALERTS_TOPIC, finding.assignee, alert_message(row, evidence=list(finding.evidence),
                                                                recipients=list(finding.recipients),
                                                                data=finding.data))
        return alert_id

    def refresh_alert(self, alert: dict, finding: Finding) -> None:
        """A new version of an agreement changed an open conflict: keep the alert, update its facts.

        No message is published (kam.alerts carries status changes), but severity and due date now
        follow the current versions, so the outcome does not depend on the order versions arrived in.
        """
        due = alert["due_at"]
        if finding.severity not in DUE_SEVERITIES:
            due = None
        elif due is None:
            due = self.due_at(finding.severity)
        self.repo.put(t.alerts, dict(alert, severity=finding.severity, title=finding.title, detail=finding.detail,
                                     data=dumps(finding.data), versions=finding.versions, due_at=due,
                                     updated_at=self.now_iso))

    def change_status(self, alert: dict, status: str, caused_by: str, *, decided_by: str | None = None,
                      comment: str | None = None, **extra) -> None:
        row = dict(alert, status=status, updated_at=self.now_iso, caused_by=caused_by, **extra)
        self.repo.put(t.alerts, row)
        self._record_history(row, decided_by=decided_by, comment=comment)
        self.emit(ALERTS_TOPIC, row["assignee"], alert_message(row))

    def _record_history(self, row: dict, *, decided_by: str | None = None, comment: str | None = None) -> None:
        self.history.append({"alert_id": row["alert_id"], "status": row["status"], "assignee": row["assignee"],
                             "caused_by": row["caused_by"], "decided_by": decided_by, "comment": comment,
                             "at": self.now_iso})

    # -- other outputs ----------------------------------------------------------------------

    def instruct(self, **fields) -> None:
        message = instruction_message(created_at=self.now_iso, **fields)
        self.emit(INSTRUCTIONS_TOPIC, message["ref_id"], message)

    def notify(self, **fields) -> None:
        message = notice_message(created_at=self.now_iso, **fields)
        self.notices.append(dict(message, recipients=dumps(message["recipients"])))
        self.emit(NOTICES_TOPIC, message["key_account_id"], message)

    def dead_letter(self, record: InputRecord, code: str, message: str) -> None:
        self.result.dead_letters += 1
        letter = dead_letter_value(topic=record.topic, partition=record.partition, offset=record.offset,
                                   key=record.key, value=record.value, code=code, message=message,
                                   received_at=self.now_iso)
        key = letter["key"]
        # PostgreSQL text cannot hold NUL: the message key (not the letter's `key` field) gets U+FFFD instead.
        self.emit(DLQ_TOPIC, key.replace("\x00", "\ufffd") if key else key, letter)

    def record_outcome(self, source: str, event_id: str, data, status: str, code: str | None = None,
                       message: str | None = None) -> None:
        """What became of a decision, for whoever made it (the inbox polls it by event id)."""
        self.decision_outcomes.append({"source": source, "event_id": event_id, "alert_id": data.alert_id,
                                       "decision": data.decision, "decided_by": data.decided_by, "status": status,
                                       "code": code, "message": message, "at": self.now_iso})

    # -- the one way to commit ---------------------------------------------------------------

    def commit(self, instance: str) -> None:
        """Write what the batch changed and commit: nothing may follow in the transaction.

        Every writer (the processor, the escalation timer, the daily review) commits this way, so none
        can forget to bump the versions of the keys it locked (other processes' caches trust them).
        On PostgreSQL the writes and the COMMIT travel together, and what they return (outbox ids,
        key versions) is read after: one round trip, not a dozen.
        """
        conn = self.repo.conn
        self.repo.before_commit()
        with pipelined(conn):
            self.repo.flush()
            add_to_counters(conn, instance, self.result.counters())
            outbox_ids = bulk_insert_later(conn, t.outbox, self.outbox, returning=("id",))
            for name, table, conflict in _RECORDS:
                if rows := getattr(self, name):
                    bulk_insert_later(conn, table, rows, conflict=conflict)
            self.repo.bump_keys(self.locked)  # last: it updates the one `commits` row every writer updates
            send_commit(conn)
        self.repo.read_returned()
        ids = sorted(i for (i,) in outbox_ids.rows())
        self.result.committed_outputs = [(i, row["topic"], row["key"], row["value"]) for i, row in zip(ids, self.outbox)]
        self.result.outputs = len(self.outbox)

    def emit(self, topic: str, key: str | None, value: dict) -> None:
        text = dumps(value)
        if len(text) > OUTPUT_VALUE_LIMIT // 4 and len(text.encode()) > OUTPUT_VALUE_LIMIT:
            text = dumps(fit_output(value, len(text.encode())))  # the relay sets aside what still does not fit
        self.outbox.append({"topic": topic, "key": key, "value": text, "created_at": self.now_iso})


class StoreWriter:
    """What every writer of batches holds (the processor, the escalation timer): the store, the settings,
    the clock, and the instance name its ops counters are kept under."""

    def __init__(self, engine: Engine, settings: Settings, *, clock: Callable[[], datetime] = utcnow,
                 instance: str = "local"):
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.instance = instance

    def _batch(self, repo: StateRepository) -> Batch:
        return Batch(repo, self.clock(), self.settings.decision_window_s)
