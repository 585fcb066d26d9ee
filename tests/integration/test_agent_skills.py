"""sbx-agent's skills: register from a folder or an uploaded zip, list the
front matter, read the content, delete; through the official SDK."""

from __future__ import annotations

import io
import zipfile

import pytest
import requests
from agent_sandbox import Sandbox

from test_agent import agent  # noqa: F401 - the fixture

SKILL = """---
name: pdf-tools
description: Split and merge PDF files
license: MIT
tags: [pdf, documents]
---

# PDF tools

Use `qpdf` to split: qpdf in.pdf --split-pages out.pdf
"""


def zipped(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


@pytest.fixture
def sb(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path / 'ws'}", f"--skills-dir={tmp_path / 'skills'}")
    (tmp_path / "ws").mkdir()
    return Sandbox(base_url=a.url), a, tmp_path


def test_zip_upload_registers_lists_reads_and_deletes(sb):
    c, _, tmp = sb
    data = zipped({"pdf/SKILL.md": SKILL, "pdf/scripts/split.sh": "qpdf \"$@\"\n",
                   "notes/SKILL.md": "---\nname: notes\ndescription: Keep notes\n---\nWrite.\n"})
    r = c.skills.register_skills(file=("skills.zip", data, "application/zip"))
    assert r.success and r.data.count == 2, r
    by_name = {s.name: s for s in r.data.registered}
    assert set(by_name) == {"pdf-tools", "notes"}
    pdf = by_name["pdf-tools"]
    assert pdf.metadata["description"] == "Split and merge PDF files"
    assert pdf.metadata["tags"] == ["pdf", "documents"]
    assert pdf.path == str(tmp / "skills/pdf-tools")
    assert (tmp / "skills/pdf-tools/scripts/split.sh").read_text() == "qpdf \"$@\"\n"
    listed = c.skills.list_metadata().data.skills
    assert {s.name for s in listed} == {"pdf-tools", "notes"}
    assert [s.name for s in c.skills.list_metadata(names="notes").data.skills] == ["notes"]
    content = c.skills.get_content("pdf-tools").data
    assert content.content.startswith("# PDF tools") and "---" not in content.content
    assert c.skills.delete_skill("pdf-tools").success
    assert not (tmp / "skills/pdf-tools").exists()
    assert not c.skills.get_content("pdf-tools").success
    assert c.skills.clear_skills().success
    assert c.skills.list_metadata().data.skills == []


def test_a_zip_whose_root_is_the_skill_and_a_name_given(sb):
    c, _, tmp = sb
    data = zipped({"SKILL.md": "---\ndescription: no name inside\n---\nbody\n"})
    r = c.skills.register_skills(file=("s.zip", data, "application/zip"), name="given")
    assert r.success and [s.name for s in r.data.registered] == ["given"]
    assert (tmp / "skills/given/SKILL.md").exists()


def test_folder_registration_keeps_files_in_place(sb):
    _, a, tmp = sb
    d = tmp / "ws/my-skills/analyst"
    d.mkdir(parents=True)
    (d / "SKILL.md").write_text("---\nname: analyst\ndescription: Look at data\n---\nDo it.\n")
    r = requests.post(f"{a.url}/v1/skills/register", files={"path": (None, "my-skills")}).json()
    assert r["success"] and r["data"]["count"] == 1
    assert r["data"]["registered"][0]["path"] == str(d)
    (d / "SKILL.md").write_text("---\nname: analyst\n---\nChanged.\n")
    assert requests.get(f"{a.url}/v1/skills/analyst/content").json()["data"]["content"] == \
        "Changed.\n"
    requests.delete(f"{a.url}/v1/skills/analyst")
    assert (d / "SKILL.md").exists()  # registered in place: not ours to remove


@pytest.mark.parametrize("files, why", [
    ({"../evil/SKILL.md": "x"}, "unsafe"),
    ({"/abs/SKILL.md": "x"}, "unsafe"),
    ({"readme.txt": "no skill here"}, "no SKILL.md"),
    ({"bad/SKILL.md": "---\nname: [unclosed\n---\n"}, "SKILL.md"),
])
def test_bad_zips_are_refused_clearly(sb, files, why):
    c, _, tmp = sb
    r = c.skills.register_skills(file=("s.zip", zipped(files), "application/zip"))
    assert not r.success and why in r.message
    assert not (tmp / "evil").exists()
    assert not [p for p in (tmp / "skills").glob("*") if not p.name.startswith(".")] \
        if (tmp / "skills").exists() else True


def test_not_a_zip_and_no_input(sb):
    c, a, _ = sb
    r = c.skills.register_skills(file=("s.zip", b"not a zip at all", "application/zip"))
    assert not r.success and "not a zip" in r.message
    r = requests.post(f"{a.url}/v1/skills/register", files={"name": (None, "x")})
    assert r.status_code == 422


@pytest.mark.parametrize("name", ["../victim", "..", ".", "a/b", ".hidden", "a\\b", "x" * 256,
                                  "na\x00me"])
def test_a_name_that_is_not_one_safe_segment_is_refused_and_touches_nothing(sb, name):
    # A name became a folder under the skills directory: "../victim" used to
    # delete and replace a folder beside it.
    _, a, tmp = sb
    victim = tmp / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    data = zipped({"SKILL.md": "---\ndescription: d\n---\nbody\n"})
    r = requests.post(f"{a.url}/v1/skills/register",
                      files={"file": ("s.zip", data, "application/zip"), "name": (None, name)})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][0] == "body"
    assert [p.name for p in victim.iterdir()] == ["keep.txt"]
    assert (victim / "keep.txt").read_text() == "mine"
    skills = tmp / "skills"
    assert not skills.exists() or not [p for p in skills.iterdir()]


def test_a_skill_md_name_that_is_not_one_safe_segment_is_refused(sb):
    c, _, tmp = sb
    r = c.skills.register_skills(
        file=("s.zip", zipped({"a/SKILL.md": "---\nname: ../victim\n---\nbody\n"}),
              "application/zip"))
    assert not r.success and "not a usable name" in r.message
    assert not (tmp / "victim").exists()
