from novaops.executor.checks.lxc import parse_ports

NS = "https://novaops.dev/xmlns/1"


def test_ports_from_metadata() -> None:
    xml = (
        f"<domain><metadata><n:ports xmlns:n='{NS}'>80, 8080,x,70000</n:ports></metadata></domain>"
    )
    assert parse_ports(xml) == (80, 8080)


def test_no_metadata_or_bad_xml() -> None:
    assert parse_ports("<domain/>") == ()
    assert parse_ports("<domain") == ()
