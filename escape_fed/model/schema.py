"""The federation model: one typed description of a federation, with every default in one place.

A federation file (YAML) is parsed into :class:`Federation`. Structure and types are checked here
(pydantic, unknown keys refused); rules that span several fields live in
:mod:`escape_fed.model.checks`. Nothing else in escape-fed reads the YAML: renderers, backends and
operations take a validated :class:`Federation`.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$")
DNS_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)
ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# The one pattern every path of the model matches (storage, datasets, groups' embargoed areas,
# control-machine files): absolute, letters, digits and '._-/' only; no '//', '.' or '..'
# segments, no trailing '/' (except the root itself). Nothing a shell, an XRootD config line or a
# URL could read twice: no spaces, newlines, '$', '(', quotes, '*', '%'.
PATH_RE = re.compile(r"/|(/[A-Za-z0-9._-]+)+")  # fullmatch only: "$" also matches before "\n"


def _name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: expected lower-case letters, digits and '-', "
            "starting with a letter, at most 32 characters"
        )
    return value


def _dns(value: str) -> str:
    if not DNS_RE.match(value):
        raise ValueError(f"{value!r} is not a valid DNS name: expected e.g. 'escape.example.org'")
    return value


def _url(schemes: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(
                f"{value!r} is not a valid URL: expected {' or '.join(s + '://' for s in schemes)}"
                "HOST[:PORT][/PATH]"
            )
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"{value!r} has an invalid port: {exc}") from None
        return value

    return AfterValidator(check)


def _abs_path(value: str) -> str:
    if not PATH_RE.fullmatch(value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError(
            f"{value!r} is not a clean absolute path: expected e.g. '/data/escape' (letters, "
            "digits and '._-' between single '/', no '.' or '..' parts, no trailing '/')"
        )
    return value


def path_within(inner: str, outer: str) -> bool:
    """Whether clean absolute path ``inner`` is ``outer`` or lies under it (by whole parts)."""
    return outer in ("/", inner) or inner.startswith(outer + "/")


def _cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a network in CIDR form: expected e.g. '10.77.1.0/24'"
        ) from None
    if net.version != 4 or net.prefixlen > 28:
        raise ValueError(f"{value!r}: expected an IPv4 network of /28 or larger")
    return value


def _account(value: str) -> str:
    if not ACCOUNT_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid Unix account name: expected e.g. 'escape-atlas'"
        )
    return value


Name = Annotated[str, AfterValidator(_name)]
DnsName = Annotated[str, AfterValidator(_dns)]
HttpsUrl = Annotated[str, _url(("https",))]
StorageUrl = Annotated[str, _url(("root", "roots", "https", "davs"))]
AbsPath = Annotated[str, AfterValidator(_abs_path)]
Cidr = Annotated[str, AfterValidator(_cidr)]
Account = Annotated[str, AfterValidator(_account)]


class Strict(BaseModel):
    """Base: unknown keys are refused, models are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Mode(StrEnum):
    """How the islands are joined."""

    GLOBAL_POOL = "global-pool"  # one federation central manager; execute nodes join via CCB
    FLOCK = "flock"  # one pool per site; access points flock; a federation collector views all


class Backend(StrEnum):
    """Where a site's hosts come from."""

    SSH = "ssh"  # hosts a site admin already has, reached over SSH
    LAB = "lab"  # hosts booted on this machine by `escape-fed lab up`
    OPENSTACK = "openstack"  # VMs created by Terraform on an OpenStack cloud (EGI FedCloud)
    AWS = "aws"  # VMs created by Terraform on AWS EC2
    KUBERNETES = "kubernetes"  # pods created with the Kubernetes API


CLOUD_BACKENDS = frozenset({Backend.OPENSTACK, Backend.AWS, Backend.KUBERNETES})


class Role(StrEnum):
    """What a host runs. One role maps to one Ansible group (and role)."""

    CENTRAL_MANAGER = "central_manager"  # HTCondor collector + negotiator
    ACCESS_POINT = "access_point"  # HTCondor schedd: where users submit
    EXECUTE = "execute"  # HTCondor startd: runs jobs
    CACHE = "cache"  # XRootD XCache in front of the site's storage
    ORIGIN = "origin"  # XRootD data server exporting the site's paths (sites without storage)
    INGRESS = "ingress"  # TLS reverse proxy validating IAM tokens
    ISSUER = "issuer"  # lab/dev OIDC token issuer (production trusts a real IAM)
    MONITORING = "monitoring"  # metrics and dashboard


# Ansible group for each role: stable names the playbooks target.
ROLE_GROUPS: dict[Role, str] = {
    Role.CENTRAL_MANAGER: "htcondor_central_manager",
    Role.ACCESS_POINT: "htcondor_access_point",
    Role.EXECUTE: "htcondor_execute",
    Role.CACHE: "xcache",
    Role.ORIGIN: "xrootd_origin",
    Role.INGRESS: "ingress",
    Role.ISSUER: "iam_issuer",
    Role.MONITORING: "monitoring",
}


class FederationInfo(Strict):
    """Identity of the federation."""

    name: Name
    trust_domain: DnsName = Field(description="HTCondor TRUST_DOMAIN and UID_DOMAIN of the pool")
    domain: DnsName = Field(
        default="escape.lab", description="DNS domain: hosts are HOST.SITE.DOMAIN unless given"
    )
    mode: Mode = Mode.GLOBAL_POOL
    central_site: Name = Field(default="central", description="site that runs the central services")


class IamGroup(Strict):
    """An IAM group and what it becomes inside the federation."""

    account: Account = Field(description="local account jobs of this group run as")
    accounting_group: Name | None = Field(default=None, description="HTCondor accounting group")
    paths: tuple[AbsPath, ...] = Field(
        default=(), description="storage paths only this group may read (embargoed area)"
    )


class Iam(Strict):
    """Trust in an OIDC / WLCG-profile token issuer (INDIGO IAM in production)."""

    issuer: HttpsUrl = Field(description="issuer URL, matched exactly against the token's iss")
    audience: Annotated[str, Field(min_length=1)] = Field(
        description="audience every relying party checks (aud claim)"
    )
    groups: dict[str, IamGroup] = Field(default_factory=dict, description="IAM group -> account")
    token_lifetime_s: Annotated[int, Field(strict=True, ge=60, le=86400)] = 1200


class Capacity(Strict):
    """Declared capacity of an execute node (never trust detection in containers)."""

    cpus: Annotated[int, Field(strict=True, ge=1, le=1024)]
    memory_mb: Annotated[int, Field(strict=True, ge=256, le=16 * 1024 * 1024)]
    gpus: Annotated[int, Field(strict=True, ge=0, le=64)] = 0
    disk_gb: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = 10


class HostTls(Strict):
    """A certificate the site gives for a host instead of one from the deployment CA."""

    certificate: AbsPath = Field(
        description="PEM certificate (leaf first, then intermediates) on the control machine"
    )
    key: AbsPath = Field(description="its PEM private key on the control machine (mode 0600)")


class Host(Strict):
    """One host of a site."""

    roles: Annotated[tuple[Role, ...], Field(min_length=1)]
    address: str | None = Field(
        default=None, description="how the control machine reaches it (ssh backend: required)"
    )
    fqdn: DnsName | None = Field(default=None, description="default: HOST.SITE.DOMAIN")
    ssh_user: Account = "root"
    ssh_port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 22
    capacity: Capacity | None = Field(default=None, description="required for execute hosts")
    count: Annotated[int, Field(strict=True, ge=1, le=1000)] = Field(
        default=1, description="cloud and kubernetes sites: how many identical instances"
    )
    flavor: str | None = Field(default=None, description="cloud instance type / flavor")
    tls: HostTls | None = Field(
        default=None,
        description="the site's own certificate for this host (default: the deployment CA's)",
    )


class Storage(Strict):
    """The data-lake storage the site's compute sits next to."""

    rse: Annotated[str, Field(pattern=r"^[A-Z0-9_-]{2,64}$")] = Field(
        description="Rucio storage element name, e.g. SITE-A_DISK"
    )
    origin: StorageUrl = Field(description="root://HOST:PORT or https://HOST:PORT of the storage")
    paths: Annotated[tuple[AbsPath, ...], Field(min_length=1)] = Field(
        description="exported namespace paths, e.g. /escape"
    )
    tls_required: StrictBool = Field(
        default=True,
        description="root:// at the site's origin and cache only over TLS (clients trusting the "
        "CA, roots://), the cache reading its origin over TLS too; false lets a client without "
        "TLS read in clear, a token in the URL included (`plan` warns)",
    )


class Cache(Strict):
    """XCache settings for the site's cache host."""

    disk_gb: Annotated[int, Field(strict=True, ge=1)] = 10
    ram_gb: Annotated[int, Field(strict=True, ge=1)] = 1  # XRootD's pfc.ram must be at least 1g
    low_watermark: Annotated[float, Field(gt=0, lt=1)] = 0.90
    high_watermark: Annotated[float, Field(gt=0, le=1)] = 0.95
    root_port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 1094
    https_port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 8443
    path: AbsPath = "/var/cache/xrootd"


class Network(Strict):
    """Network facts of a site."""

    behind_nat: StrictBool = Field(
        default=False, description="no inbound ports: execute nodes use CCB"
    )
    subnet: Cidr | None = Field(
        default=None, description="lab: the site's subnet (default derived)"
    )


class Cloud(Strict):
    """Where a cloud or Kubernetes site's instances are created."""

    provider_cloud: str | None = Field(default=None, description="openstack: clouds.yaml entry")
    region: str | None = None
    image: str | None = Field(default=None, description="VM image name / AMI / container image")
    network: str | None = Field(default=None, description="openstack: network to attach to")
    namespace: Name | None = Field(default=None, description="kubernetes: namespace")
    lifetime_days: Annotated[int, Field(strict=True, ge=1, le=365)] | None = Field(
        default=None, description="ephemeral site: withdraw after this many days"
    )


class Site(Strict):
    """A partner site: an island of compute next to its storage."""

    backend: Backend = Backend.SSH
    description: str = ""
    storage: Storage | None = None
    cache: Cache | None = None
    network: Network = Field(default_factory=Network)
    cloud: Cloud | None = None
    hosts: Annotated[dict[Name, Host], Field(min_length=1)]


class Dataset(Strict):
    """A dataset of the data lake: where it lives. A Rucio lookup can replace this later."""

    rses: Annotated[tuple[str, ...], Field(min_length=1)] = Field(description="RSEs holding it")
    path: AbsPath = Field(description="path prefix of its files on those RSEs")


class Lab(Strict):
    """Settings of the local lab (backend ``lab``)."""

    state_dir: AbsPath = "/var/lib/escape-fed/lab"
    supernet: Cidr = "10.77.0.0/16"
    wan_mbit: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 100
    prefix: Annotated[str, Field(pattern=r"^[a-z]{2,4}$")] = Field(
        default="ef", description="starts the name of every kernel object the lab makes"
    )


class Security(Strict):
    """Security settings that apply to every component. Secure values are the defaults."""

    secrets_dir: AbsPath = Field(
        default="/var/lib/escape-fed/secrets",
        description="control-machine directory for generated secrets (outside any inventory)",
    )
    trusted_cas: tuple[AbsPath, ...] = Field(
        default=(),
        description="extra CA certificates (PEM, control machine) every host trusts: the CAs "
        "that signed sites' own certificates",
    )
    encryption: Literal["REQUIRED"] = "REQUIRED"
    integrity: Literal["REQUIRED"] = "REQUIRED"


class Control(Strict):
    """Where the control machine keeps escape-fed's own state."""

    state_dir: AbsPath = Field(
        default="/var/lib/escape-fed/state",
        description="deploy snapshots (what was applied), per federation",
    )


class Federation(Strict):
    """A whole federation: the single source of truth for render, deploy and operate."""

    version: Literal[1] = 1
    federation: FederationInfo
    iam: Iam
    sites: Annotated[dict[Name, Site], Field(min_length=1)]
    datasets: dict[Name, Dataset] = Field(default_factory=dict)
    lab: Lab = Field(default_factory=Lab)
    security: Security = Field(default_factory=Security)
    control: Control = Field(default_factory=Control)

    def snapshot_path(self) -> str:
        """Where a deploy records what it applied (``plan`` compares against it)."""
        return f"{self.control.state_dir}/{self.federation.name}/applied.json"
