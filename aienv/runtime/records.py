"""The environments' records in the state store: the one place they become JSON."""

from __future__ import annotations

from aienv.errors import NotFound
from aienv.runtime.record import EnvRecord
from aienv.state.store import StateStore

TABLE = "environments"


class EnvRecords:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    def all(self) -> list[EnvRecord]:
        return [EnvRecord.from_json(doc) for doc in self.state.documents(TABLE)]

    def find(self, env_id: str) -> EnvRecord | None:
        doc = self.state.document(TABLE, env_id)
        return None if doc is None else EnvRecord.from_json(doc)

    def get(self, env_id: str) -> EnvRecord:
        record = self.find(env_id)
        if record is None:
            raise NotFound(f"no environment {env_id!r} on this node", code="environment_not_found")
        return record

    def save(self, record: EnvRecord) -> None:
        self.state.save_document(TABLE, record.to_json())

    def delete(self, env_id: str) -> None:
        self.state.delete_document(TABLE, env_id)

    def live(self) -> list[EnvRecord]:
        return [r for r in self.all() if r.live]
