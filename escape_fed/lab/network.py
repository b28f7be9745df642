"""The lab network: a router namespace joining one bridge per site, one namespace per host.

Layout (every kernel object's name starts with ``spec.prefix``: leftovers are found by name)::

    root ns    <prefix>-ctl: control_address, one route (lab supernet via the router)
    router ns  <prefix>-ctlr: control .1; ip_forward=1 here only; no default route
               per site: <prefix>-w<i>r (gateway) ==veth, tbf both ways== <prefix>-w<i>s,
               the latter on the site bridge <site.bridge>
    host ns    eth0: host address, route to the lab supernet via the gateway, no default
               route; its veth peer <prefix>-v<j> is on the site bridge

The bridges live inside the router namespace, so the root namespace holds one link only.
The WAN link of a site is the veth pair between its bridge and the router, shaped with
``tbf`` in both directions (this kernel has no ``netem``: delay cannot be emulated).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from escape_fed.errors import BadInput, OperationFailed
from escape_fed.lab._sys import Progress, quiet, run
from escape_fed.lab.spec import LabHost, LabSite, LabSpec

IFNAMSIZ = 15


def router_ns(prefix: str) -> str:
    return f"{prefix}-router"


def control_link(prefix: str) -> str:
    return f"{prefix}-ctl"


def _site_index(spec: LabSpec, site: LabSite) -> int:
    return spec.sites.index(site) + 1


def wan_links(spec: LabSpec, site: LabSite) -> tuple[str, str]:
    """(router side, bridge side) of a site's WAN veth pair, both in the router namespace."""
    i = _site_index(spec, site)
    return f"{spec.prefix}-w{i}r", f"{spec.prefix}-w{i}s"


def host_peer_link(spec: LabSpec, host: LabHost) -> str:
    return f"{spec.prefix}-v{spec.hosts.index(host) + 1}"


def supernet(spec: LabSpec) -> ipaddress.IPv4Network:
    """The smallest network holding the control subnet and every site subnet."""
    nets = [ipaddress.IPv4Network(spec.control_subnet)]
    nets += [ipaddress.IPv4Network(s.subnet) for s in spec.sites]
    net = nets[0]
    while not all(n.subnet_of(net) for n in nets):
        net = net.supernet()
    return net


def router_control_address(spec: LabSpec) -> str:
    return str(ipaddress.IPv4Network(spec.control_subnet).network_address + 1)


def validate(spec: LabSpec) -> None:
    """Check the spec's network before anything is made: one clear error per problem."""
    if not spec.prefix or len(spec.prefix) > 6 or not spec.prefix.replace("-", "").isalnum():
        raise BadInput(f"lab prefix {spec.prefix!r}: use 1 to 6 letters or digits (e.g. 'ef')")
    sites = {s.name: s for s in spec.sites}
    if len(sites) != len(spec.sites):
        raise BadInput("lab sites: two sites have the same name; give each site its own name")
    names = [h.name for h in spec.hosts]
    if len(set(names)) != len(names):
        raise BadInput("lab hosts: two hosts have the same name; host names must be unique")
    ctl = ipaddress.IPv4Network(spec.control_subnet)
    if ipaddress.IPv4Address(spec.control_address) not in ctl:
        raise BadInput(
            f"control_address {spec.control_address} is not in control_subnet {spec.control_subnet}"
        )
    seen_nets = [ctl]
    for site in spec.sites:
        net = ipaddress.IPv4Network(site.subnet)
        if any(net.overlaps(other) for other in seen_nets):
            raise BadInput(f"site {site.name}: subnet {site.subnet} overlaps another lab subnet")
        seen_nets.append(net)
        if ipaddress.IPv4Address(site.gateway) not in net:
            raise BadInput(f"site {site.name}: gateway {site.gateway} is not in {site.subnet}")
        if len(site.bridge) > IFNAMSIZ or not site.bridge.startswith(spec.prefix + "-"):
            raise BadInput(
                f"site {site.name}: bridge name {site.bridge!r} must start with "
                f"'{spec.prefix}-' and be at most {IFNAMSIZ} characters"
            )
    addresses: set[str] = {spec.control_address}
    for host in spec.hosts:
        if host.site not in sites:
            raise BadInput(f"host {host.name}: unknown site {host.site!r}")
        site = sites[host.site]
        if ipaddress.IPv4Address(host.address) not in ipaddress.IPv4Network(site.subnet):
            raise BadInput(f"host {host.name}: address {host.address} is not in {site.subnet}")
        if host.address in addresses or host.address == site.gateway:
            raise BadInput(f"host {host.name}: address {host.address} is already used in the lab")
        addresses.add(host.address)
        if not host.netns.startswith(spec.prefix + "-") or host.netns == router_ns(spec.prefix):
            raise BadInput(
                f"host {host.name}: network namespace {host.netns!r} must start with "
                f"'{spec.prefix}-' (and not be the router's)"
            )
    if len(spec.hosts) > 9999:
        raise BadInput("a lab holds at most 9999 hosts")


# --------------------------------------------------------------------------- helpers


def _ns(netns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def list_netns() -> list[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return []
    try:
        return [str(e["name"]) for e in json.loads(out)]
    except (ValueError, KeyError, TypeError):
        return [line.split()[0] for line in out.splitlines() if line.strip()]


def list_links(netns: str | None = None) -> list[str]:
    argv = ["ip", "-j", "link", "show"]
    if netns is not None:
        argv = ["ip", "-n", netns, "-j", "link", "show"]
    out = run(argv, check=False).stdout.strip()
    if not out:
        return []
    return [str(e["ifname"]) for e in json.loads(out)]


# --------------------------------------------------------------------------- up


def create(spec: LabSpec, progress: Progress | None = None) -> None:
    """Make the lab's namespaces, bridges, links, addresses, routes and shaping."""
    say = progress or quiet
    validate(spec)
    p = spec.prefix
    rns = router_ns(p)
    lab = str(supernet(spec))
    say(f"network: router {rns}, {len(spec.sites)} site bridges, {len(spec.hosts)} host links")
    batch: list[str] = []  # `ip -batch` lines run in the root namespace

    existing = set(list_netns())
    for ns in [rns, *(h.netns for h in spec.hosts)]:
        if ns in existing:
            raise OperationFailed(
                f"network namespace {ns} already exists (a leftover?): "
                "run `escape-fed lab down` first"
            )
        batch.append(f"netns add {ns}")
    run(["ip", "-batch", "-"], input_text="\n".join(batch) + "\n")

    # Router: loopback, forwarding, control link.
    ctl, ctlr = control_link(p), f"{p}-ctlr"
    ctl_prefix = ipaddress.IPv4Network(spec.control_subnet).prefixlen
    root_batch = [
        f"link add {ctl} type veth peer name {ctlr} netns {rns}",
        f"address add {spec.control_address}/{ctl_prefix} dev {ctl}",
        f"link set {ctl} up",
    ]
    run(["ip", "-batch", "-"], input_text="\n".join(root_batch) + "\n")
    run(_ns(rns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"))
    router = [
        "link set lo up",
        f"address add {router_control_address(spec)}/{ctl_prefix} dev {ctlr}",
        f"link set {ctlr} up",
    ]
    for site in spec.sites:
        wr, ws = wan_links(spec, site)
        plen = ipaddress.IPv4Network(site.subnet).prefixlen
        router += [
            f"link add {site.bridge} type bridge",
            f"link set {site.bridge} up",
            f"link add {wr} type veth peer name {ws}",
            f"link set {ws} master {site.bridge}",
            f"address add {site.gateway}/{plen} dev {wr}",
            f"link set {ws} up",
            f"link set {wr} up",
        ]
    run(["ip", "-n", rns, "-batch", "-"], input_text="\n".join(router) + "\n")

    # Hosts: one veth each, created straight into the host and router namespaces.
    links = []
    for host in spec.hosts:
        peer = host_peer_link(spec, host)
        links.append(f"link add eth0 netns {host.netns} type veth peer name {peer} netns {rns}")
    run(["ip", "-batch", "-"], input_text="\n".join(links) + "\n")
    sites = {s.name: s for s in spec.sites}
    router = []
    for host in spec.hosts:
        site = sites[host.site]
        peer = host_peer_link(spec, host)
        router += [f"link set {peer} master {site.bridge}", f"link set {peer} up"]
        plen = ipaddress.IPv4Network(site.subnet).prefixlen
        hb = [
            "link set lo up",
            f"address add {host.address}/{plen} dev eth0",
            "link set eth0 up",
            f"route add {lab} via {site.gateway} dev eth0",
        ]
        run(["ip", "-n", host.netns, "-batch", "-"], input_text="\n".join(hb) + "\n")
    run(["ip", "-n", rns, "-batch", "-"], input_text="\n".join(router) + "\n")

    # The root namespace reaches the lab through the router, and nothing else changes there.
    run(["ip", "route", "add", lab, "via", router_control_address(spec), "dev", ctl])

    # WAN shaping: both directions of each site's link to the router.
    burst_kb = max(64, spec.wan_mbit)
    for site in spec.sites:
        for dev in wan_links(spec, site):
            run(
                _ns(rns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                    "rate", f"{spec.wan_mbit}mbit", "burst", f"{burst_kb}kb", "latency", "50ms")
            )  # fmt: skip


def hosts_file(spec: LabSpec) -> str:
    """/etc/hosts for a lab host: every lab host by fqdn and short name."""
    lines = [
        "# Written by escape-fed lab: every lab host, by fqdn and short name.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    for host in spec.hosts:
        names = [host.fqdn, host.name] if host.fqdn != host.name else [host.name]
        lines.append(f"{host.address}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- down


def destroy(prefix: str, netns_names: list[str] | None = None) -> None:
    """Remove the lab's network objects: those listed and any leftover named ``<prefix>-*``.

    Links go before namespaces: deleting a namespace is asynchronous and its veths would linger.
    """
    tag = prefix + "-"
    names = set(netns_names or [])
    names |= {n for n in list_netns() if n.startswith(tag)}
    present = set(list_netns())
    for ns in sorted(names & present):
        dels = [f"link delete {link}" for link in list_links(ns) if link != "lo"]
        if dels:
            run(["ip", "-n", ns, "-force", "-batch", "-"], input_text="\n".join(dels) + "\n",
                check=False)  # fmt: skip
    for link in list_links():
        if link.startswith(tag):
            run(["ip", "link", "delete", link], check=False)
    for ns in sorted(names & present):
        run(["ip", "netns", "delete", ns], check=False)
    for ns in sorted(names):  # `ip netns delete` may leave the bind-mount file behind
        path = Path("/run/netns") / ns
        if path.exists():
            run(["umount", str(path)], check=False)
            path.unlink(missing_ok=True)


def leftovers(prefix: str) -> dict[str, list[str]]:
    """Kernel network objects that carry the lab's prefix (empty lists once the lab is down)."""
    tag = prefix + "-"
    return {
        "netns": [n for n in list_netns() if n.startswith(tag)],
        "links": [link for link in list_links() if link.startswith(tag)],
    }
