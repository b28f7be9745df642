"""Hand-made lab specs (no federation file needed): for tests, the bench and trying the lab."""

from __future__ import annotations

from pathlib import Path

from escape_fed.lab.spec import LabHost, LabSite, LabSpec


def demo_spec(
    state_dir: Path,
    *,
    sites: int = 2,
    hosts_per_site: int = 2,
    central: bool = True,
    prefix: str = "ef",
    net: str = "10.77",
    third: int = 0,
    name: str = "demo",
    image_cache: Path | None = None,
    wan_mbit: int = 100,
) -> LabSpec:
    """``sites`` sites of ``hosts_per_site`` hosts, plus a one-host ``central`` site.

    Site i (1-based) gets ``{net}.{third + i}.0/24``, gateway ``.1``, hosts from ``.10``; the
    control subnet is ``{net}.{third}.0/24`` with the root namespace at ``.254``. Tests and the
    bench use their own ``prefix`` and ``third`` so they never touch a lab already running.
    """
    lab_sites: list[LabSite] = []
    lab_hosts: list[LabHost] = []
    names = [f"site-{chr(ord('a') + i)}" for i in range(sites)]
    if central:
        names.append("central")
    for i, site in enumerate(names, start=1):
        octet = third + i
        lab_sites.append(
            LabSite(
                name=site,
                subnet=f"{net}.{octet}.0/24",
                gateway=f"{net}.{octet}.1",
                bridge=f"{prefix}-br{i}",
            )
        )
        count = 1 if site == "central" else hosts_per_site
        for j in range(count):
            short = "cm" if site == "central" else f"wn-{site[-1]}{j + 1}"
            lab_hosts.append(
                LabHost(
                    name=short,
                    site=site,
                    fqdn=f"{short}.{site}.escape.lab",
                    address=f"{net}.{octet}.{10 + j}",
                    netns=f"{prefix}-{short}",
                )
            )
    return LabSpec(
        name=name,
        state_dir=state_dir,
        sites=tuple(lab_sites),
        hosts=tuple(lab_hosts),
        wan_mbit=wan_mbit,
        control_address=f"{net}.{third}.254",
        control_subnet=f"{net}.{third}.0/24",
        prefix=prefix,
        image_cache=image_cache,
    )
