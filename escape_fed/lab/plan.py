"""Turn a validated federation into the :class:`LabSpec` the lab runtime builds."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from escape_fed.errors import BadInput
from escape_fed.lab.spec import LabHost, LabSite, LabSpec
from escape_fed.model.schema import Backend, Federation
from escape_fed.model.view import hosts, lab_subnets


def lab_spec(fed: Federation, state_dir: Path | None = None) -> LabSpec:
    """The lab for every ``backend: lab`` site of ``fed``.

    Raises :class:`BadInput` when the federation has no lab site.
    """
    subnets = lab_subnets(fed)
    if not subnets:
        raise BadInput(
            "the federation has no site with 'backend: lab': nothing to bring up in "
            "the lab (see inventories/lab/federation.yaml)"
        )
    supernet = ipaddress.IPv4Network(fed.lab.supernet)
    control = next(supernet.subnets(new_prefix=24))
    sites = tuple(
        LabSite(
            name=name,
            subnet=str(net),
            gateway=str(net.network_address + 1),
            bridge=f"{fed.lab.prefix}-br{i}",
        )
        for i, (name, net) in enumerate(subnets.items(), start=1)
    )
    lab_hosts = tuple(
        LabHost(
            name=h.name,
            site=h.site,
            fqdn=h.fqdn,
            address=str(h.address),
            netns=f"{fed.lab.prefix}-{h.name}",
        )
        for h in hosts(fed)
        if h.backend is Backend.LAB
    )
    return LabSpec(
        name=fed.federation.name,
        state_dir=state_dir or Path(fed.lab.state_dir),
        sites=sites,
        hosts=lab_hosts,
        wan_mbit=fed.lab.wan_mbit,
        control_address=str(control.broadcast_address - 1),
        control_subnet=str(control),
        prefix=fed.lab.prefix,
    )
