"""Running the twins of a site's kits (site_config.kits lists them)."""

from __future__ import annotations

from datetime import datetime

from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import BrokerAddress
from hardware_kits.twins.base import twin_class
from site_config.kits import KitEntry


class Fleet:
    """The twins of a site, each on its own connection with its own kit credentials."""

    def __init__(
        self, entries: list[KitEntry], models: dict[str, dict], addresses: dict[str, BrokerAddress]
    ) -> None:
        self.runners: list[KitRunner] = []
        for entry in entries:
            if not entry.twin:
                continue
            descriptor = models[entry.model]
            start = (entry.start or datetime.now().astimezone()).timestamp()
            model = twin_class(entry.model)(descriptor, seed=entry.seed, start=start)
            self.runners.append(
                KitRunner(
                    entry.id, model, addresses[entry.id], rate_hz=entry.rate_hz, speed=entry.speed
                )
            )

    def start(self) -> Fleet:
        for runner in self.runners:
            runner.start()
        return self

    def stop(self) -> None:
        for runner in self.runners:
            runner.stop()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
