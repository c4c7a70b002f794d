"""Config parsing and validation: typed values, one-line errors naming the bad key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli import main
from node.config import ConfigError, load_config

from tests.node.node_helpers import write_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "node.toml"


def test_shipped_config_loads_with_a_folder_destination_and_default_rules():
    cfg = load_config(SHIPPED)
    assert cfg.node.ae_title == "DXRNODE"
    assert cfg.node.port == 11112
    assert cfg.data_dir.is_absolute()
    assert [d.type for d in cfg.destinations] == ["folder"], "make run must need nothing else running"
    assert {"STORESCU", "ORTHANC"} <= {s.ae_title for s in cfg.sources}
    assert cfg.reference.dir == (REPO / "config" / "reference").resolve()
    assert cfg.http is None


def test_every_key_of_the_shipped_config_is_commented():
    uncommented = []
    for line in SHIPPED.read_text().splitlines():
        stripped = line.strip()
        if re.match(r"^[A-Za-z_]+\s*=", stripped) and "#" not in stripped:
            uncommented.append(stripped)
    assert uncommented == []


def test_relative_data_dir_is_relative_to_the_config_file_and_flags_override(tmp_path):
    path = write_config(tmp_path / "cfgdir", port=4000)
    cfg = load_config(path)
    assert cfg.data_dir == (tmp_path / "cfgdir" / "var").resolve()
    cfg = load_config(path, port=4100, data_dir=tmp_path / "elsewhere")
    assert cfg.node.port == 4100
    assert cfg.data_dir == (tmp_path / "elsewhere").resolve()
    assert cfg.destinations[0].path == cfg.data_dir / "outbox"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[node]\nport = "abc"\n', '[node] port must be an integer 1-65535, got "abc"'),
        ("[node]\nport = 70000\n", "[node] port must be an integer 1-65535, got 70000"),
        ("[node]\nworkers = 0\n", "[node] workers must be an integer 1-64, got 0"),
        ('[node]\nae_title = "A_TITLE_LONGER_THAN_16"\n', "[node] ae_title must be an AE title"),
        ("[node]\nprot = 1\n", "[node] has unknown key 'prot'"),
        ("[study]\nquiet_period_seconds = -1\n", "[study] quiet_period_seconds must be a number >= 0, got -1"),
        ("[[sources]]\nhost = \"1.2.3.4\"\n", "[[sources]] #1 ae_title is required"),
        ('[[destinations]]\nname = "pacs"\nae_title = "P"\nhost = "h"\n', "[[destinations]] 'pacs' port is required"),
        ('[[destinations]]\nname = "x"\ntype = "ftp"\n', "[[destinations]] 'x' type must be \"dimse\" or \"folder\""),
        ('[[destinations]]\nname = "a"\ntype = "folder"\n[[destinations]]\nname = "a"\ntype = "folder"\n',
         "name is used twice"),
        ("[export]\nmax_attempts = 0\n", "[export] max_attempts must be an integer 1-1000, got 0"),
        ("[export]\nretry_base_delay_seconds = 10\nretry_max_delay_seconds = 1\n",
         "[export] retry_max_delay_seconds must be >= retry_base_delay_seconds"),
        ('[[rules.analyse]]\nModalty = ["CR"]\n', "Modalty is not a DICOM keyword"),
        ("[[rules.analyse]]\nModality = 3\n", "Modality must be a string or a non-empty list of strings, got 3"),
        ('[outputs]\nrefusal_sr = "yes"\n', '[outputs] refusal_sr must be "all", "hands" or "none", got \'yes\''),
        ("[http]\nport = 0\n", "[http] port must be an integer 1-65535, got 0"),
        ("[disk]\nmin_free_bytes = -5\n", "[disk] min_free_bytes must be an integer >= 0, got -5"),
        ("[bogus]\nx = 1\n", "unknown section or key 'bogus'"),
        ("[node\n", "not valid TOML"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(tmp_path, toml, message):
    path = tmp_path / "node.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert message in text
    assert text.startswith(f"{path}: ")
    assert "\n" not in text


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found"):
        load_config(tmp_path / "nope.toml")


def test_optional_sections_are_typed(tmp_path):
    path = write_config(
        tmp_path,
        '[http]\nport = 8081\ntoken_file = "tok"\nmax_body_bytes = 1000\n[disk]\nmin_free_bytes = 5\n'
        '[reference]\ndir = "ref"\n',
        destinations='[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "10.0.0.1"\nport = 104\n'
                     '[[destinations]]\nname = "web"\ntype = "dicomweb"\nurl = "http://x/dicom-web"\n',
    )
    cfg = load_config(path)
    assert cfg.http is not None and cfg.http.port == 8081 and cfg.http.max_body_bytes == 1000
    assert cfg.http.token_file == (tmp_path / "tok").resolve()
    assert cfg.disk.min_free_bytes == 5
    assert cfg.reference.dir == (tmp_path / "ref").resolve()
    pacs, web = cfg.destinations
    assert (pacs.type, pacs.ae_title, pacs.host, pacs.port) == ("dimse", "PACS", "10.0.0.1", 104)
    assert (web.type, web.url) == ("dicomweb", "http://x/dicom-web")
    assert cfg.destination("web") is web
    with pytest.raises(ConfigError, match="no destination named 'nope'"):
        cfg.destination("nope")


def test_export_backoff_doubles_up_to_the_cap(tmp_path):
    cfg = load_config(write_config(tmp_path))  # base 0.2 s, max 0.5 s
    assert [cfg.export.delay_seconds(n) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.5, 0.5]


def test_check_config_cli_reports_ok_and_errors_in_one_line(tmp_path, capsys):
    good = write_config(tmp_path / "good")
    assert main(["check-config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nport = "abc"\n')
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f'dxr-node: error: {bad}: [node] port must be an integer 1-65535, got "abc"\n'


def test_console_script_errors_never_show_a_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nworkers = 'many'\n")
    for args in (["check-config", str(bad)], ["serve", "--config", str(bad)], ["serve", "--port", "x"],
                 ["queue", "retry", "ZZ", "--config", str(bad)], ["no-such-verb"]):
        proc = subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, cwd=REPO,
                              timeout=60)
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)


def test_outputs_options_are_checked_against_node_outputs_at_start(tmp_path, capsys):
    path = write_config(tmp_path, '[outputs]\ncolour = "red"\n')
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: [outputs] colour is not an output option (known: " in err and err.count("\n") == 1
    path = write_config(tmp_path, '[outputs]\nmanufacturer = 3\n')
    assert main(["check-config", str(path)]) == 2
    assert "[outputs] manufacturer must be a str, got 3" in capsys.readouterr().err
    path = write_config(tmp_path, '[outputs]\nrefusal_sr = false\ninstitution_name = "St. Elsewhere"\n')
    assert main(["check-config", str(path)]) == 0
    from node.report.options import output_options

    options = output_options(load_config(path), strict=True)
    assert (options.refusal_sr, options.institution_name) == ("none", "St. Elsewhere")  # the old boolean


def test_refusal_sr_modes_and_the_deprecated_boolean(tmp_path, caplog):
    from node.report.options import output_options

    assert load_config(write_config(tmp_path)).outputs.refusal_sr == "hands"  # the default
    for text, mode in (('"all"', "all"), ('"HANDS"', "hands"), ('"none"', "none"), ("true", "all"), ("false", "none")):
        cfg = load_config(write_config(tmp_path, f"[outputs]\nrefusal_sr = {text}\n"))
        assert cfg.outputs.refusal_sr == mode
        caplog.clear()
        assert output_options(cfg, strict=True).refusal_sr == mode
        deprecated = [r.getMessage() for r in caplog.records if "event=config_deprecated" in r.getMessage()]
        assert len(deprecated) == (1 if text in ("true", "false") else 0)


def test_check_config_prints_the_active_reference_set_and_whether_it_is_provisional(tmp_path, capsys):
    ref = (REPO / "config" / "reference").resolve()
    path = write_config(tmp_path, f'[reference]\ndir = "{ref}"\ntable = "wilczek2013"\n')
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "reference: Sectra anchor (Wilczek 2013): PROVISIONAL" in out
    assert "women: T 0.583 +/- 0.047, Z ages 20-91 provisional" in out and "men: T 0.6576" in out
    path = write_config(tmp_path, f'[reference]\ndir = "{ref}"\ntable = "nope"\n')
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "reference set 'nope' not found (available: african_american2005, black2001" in err
    assert err.count("\n") == 1
    path = write_config(tmp_path, f'[reference]\ndir = "{ref}"\n')  # no table: every set at once is ambiguous
    assert main(["check-config", str(path)]) == 2
    assert "choose one with [reference] table" in capsys.readouterr().err
    path = write_config(tmp_path, '[reference]\ntable = "../x"\n')
    with pytest.raises(ConfigError, match="table must be a file name"):
        load_config(path)


def test_shipped_config_uses_the_default_reference_set():
    cfg = load_config(REPO / "config" / "node.toml")
    assert cfg.reference.table == "black2001"
    from node.reference import load_reference

    assert load_reference(cfg).name == "US women (Black 2001)"


def test_uid_root_is_checked_at_start(tmp_path, capsys):
    path = write_config(tmp_path, '[outputs]\nuid_root = "1.2.x"\n')
    assert main(["check-config", str(path)]) == 2
    assert "[outputs] uid_root must be a UID root" in capsys.readouterr().err
    path = write_config(tmp_path, '[outputs]\nuid_root = "1.2.826.0.1.3680043.10.999"\n')
    assert main(["check-config", str(path)]) == 0
