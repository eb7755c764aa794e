"""The contract every index backend passes: SQLite and PostgreSQL answer identically.

Each backend gets the real :class:`~pacs.archive.Archive` (filesystem object store,
:class:`~pacs.storage.index.SqlIndex` on an engine migrated with
:func:`~pacs.storage.database.upgrade`) and ingests the same real files: a
selection from the shared corpus plus every file of ``vietnamese/``.

What the tests expect comes from the manifests (UIDs, modalities, SHA-256,
Unicode names) and from an independent read of each file with pydicom (dates,
times, descriptions): see :class:`Reference`. The matching rules of that
reference are written out plainly (PS3.4 C.2.2.2 plus our person-name rule) so
that a mistake in ``pacs.storage.matching`` shows up as a difference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import Engine, func, select

from pacs.archive import Archive, Source, StoreResult, StoreStatus
from pacs.config import Settings
from pacs.errors import DuplicateInstance
from pacs.storage.database import (
    aware,
    ensure_schema,
    make_engine,
    schema_is_current,
    upgrade,
)
from pacs.storage.filesystem import FilesystemObjectStore
from pacs.storage.index import SqlIndex
from pacs.storage.matching import Kind, Level, Query, attributes_for
from pacs.storage.models import Instance, Series, StoreIntent, Study
from pacs.storage.objects import instance_key
from support import PostgresCluster, is_clean, same_sop_siblings, vietnamese_files

pytestmark = pytest.mark.contract

BACKENDS = ("sqlite", "postgresql")
SOURCE = Source("import", ae_title="CONTRACT")

# Files that are each well-formed and together cover what the index must get right.
CT_SMALL = "pydicom/test_files/CT_small.dcm"  # CT, 2004-01-19 07:27:30
CT_SMALL_PARAMETRIC_MAP = "pydicom-data/parametric_map_float.dcm"  # OT series in CT_small's study
MR_SMALL = "pydicom/test_files/MR_small.dcm"  # re-encoded by several files, same SOP Instance UID
DOE_CR_STUDY = (  # one CR study of patient 77654033 with three series
    "pydicom/dicomdirtests/77654033/CR1/6154",
    "pydicom/dicomdirtests/77654033/CR2/6247",
    "pydicom/dicomdirtests/77654033/CR3/6278",
)
DOE_CT_STUDY = (  # the same patient's CT study: one series of four instances
    "pydicom/dicomdirtests/77654033/CT2/17106",
    "pydicom/dicomdirtests/77654033/CT2/17136",
    "pydicom/dicomdirtests/77654033/CT2/17166",
    "pydicom/dicomdirtests/77654033/CT2/17196",
)
HHMM_STUDY_TIME = "pydicom-data/mlut_18.dcm"  # StudyTime written as HHMM ("1200")
CORPUS_SELECTION = (
    CT_SMALL,
    CT_SMALL_PARAMETRIC_MAP,
    MR_SMALL,
    *DOE_CR_STUDY,
    *DOE_CT_STUDY,
    "pydicom/test_files/liver_1frame.dcm",  # SEG …
    "pydicom-data/liver_rle.dcm",  # … and a second SEG series of the same study
    "pydicom/charset_files/chrFren.dcm",  # Latin-1: Buc^Jérôme
    "pydicom/charset_files/chrGerm.dcm",  # Latin-1: Äneas^Rüdiger
    "pydicom/charset_files/chrH31.dcm",  # Japanese, three component groups
    "pydicom/charset_files/chrH32.dcm",  # Japanese, half-width katakana + kanji
    "pydicom/charset_files/chrX1.dcm",  # UTF-8 Chinese
    "pydicom/charset_files/chrRuss.dcm",  # Cyrillic
    "pydicom/test_files/examples_overlay.dcm",  # MR, StudyTime with a fraction
    "pydicom/test_files/waveform_ecg.dcm",  # ECG
    "pydicom/test_files/rtplan.dcm",  # RTPLAN
    "pydicom/test_files/test-SR.dcm",  # SR without Patient ID or Study Date
    "pydicom-data/color-pl.dcm",  # ACR-NEMA style date/time: 1994.11.05, 11:20:00
    HHMM_STUDY_TIME,
    "suyashkumar-dicom/1.dcm",  # PT, 1960
    "fo-dicom/OutOfBoundsOverlay.dcm",  # MG, ISO_IR 192
)
VIETNAMESE_ENCODINGS = ("utf8", "nocharset", "latin1lie", "cp1258")

UNIQUE_KEY = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}


# ---------------------------------------------------------------- the reference


def plain(text: str) -> str:
    """A name or description as our PN rule compares it: no case, no diacritics.

    ``Nguyễn^Thị`` → ``nguyen thi``: NFKD without combining marks, đ → d,
    casefolded, ``^`` as a space.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c) or c > "\u036f")
    stripped = stripped.replace("đ", "d").replace("Đ", "D")
    return " ".join(stripped.casefold().replace("^", " ").split())


def strip_diacritics(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.replace("đ", "d").replace("Đ", "D")


def glob(pattern: str, value: str) -> bool:
    """PS3.4 C.2.2.2.4: ``*`` any run of characters, ``?`` exactly one."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def pn_matches(query: str, name: str) -> bool:
    """Our PN rule: PS3.4 single-value/wildcard matching on the plain forms.

    A wildcard query in a non-Latin script may also match the ideographic or
    phonetic component group (``山田*`` finds ``Yamada^Tarou=山田^太郎=…``).
    """
    q, v = plain(query), plain(name)
    if not q:
        return True
    if not has_wildcard(q):
        return q == v
    if glob(q, v):
        return True
    if not q.isascii() and "=" not in q:
        groups = v.split("=")
        return any(glob(q, "=".join(groups[i:])) for i in range(1, len(groups)))
    return False


def fuzzy_matches(query: str, value: str) -> bool:
    """Every word of the query starts some word of the value, in any order."""
    words = plain(query).replace("*", " ").replace("?", " ").split()
    have = plain(value).replace("=", " ").split()
    return all(any(h.startswith(w) for h in have) for w in words)


def date_matches(spec: str, value: str) -> bool:
    """PS3.4 C.2.2.2.5 range matching for DA: ``d``, ``a-b``, ``a-``, ``-b``."""
    if "-" not in spec:
        return value == spec
    low, high = spec.split("-")
    return bool(value) and (not low or value >= low) and (not high or value <= high)


def _time_key(value: str, fill: str) -> str:
    whole, _, frac = value.partition(".")
    return whole.ljust(6, fill) + "." + frac.ljust(6, fill)


def time_matches(spec: str, value: str) -> bool:
    """PS3.4 C.2.2.2.5 for TM; a value or bound given to the minute or hour covers
    that whole minute or hour (``1200`` is 12:00:00.000000 – 12:00:59.999999)."""
    if not value:
        return False
    low, high = spec.split("-") if "-" in spec else (spec, spec)
    stored = _time_key(value, "0")
    return (not low or stored >= _time_key(low, "0")) and (
        not high or stored <= _time_key(high, "9")
    )


def modalities_match(spec: str, modalities: set[str]) -> bool:
    return any(m in modalities for m in spec.split("\\"))


def _dicom_date(value: Any) -> str:
    return str(value or "").replace(".", "").replace("-", "").strip()


def _dicom_time(value: Any) -> str:
    """TM as the index keeps it: HHMMSS[.ffffff] (PS3.5 allows HH and HHMM too)."""
    text = str(value or "").replace(":", "").strip()
    whole, dot, fraction = text.partition(".")
    return whole.ljust(6, "0") + (dot + fraction if fraction else "") if whole else ""


@dataclass(frozen=True)
class RefInstance:
    path: str  # relative to the corpus root
    sop_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    sha256: str
    size: int
    instance_number: int | None
    patient_id: str
    patient_name: str
    study_date: str
    study_time: str
    study_description: str
    accession_number: str


@dataclass
class RefStudy:
    """A study as the index should show it: attributes of its first stored instance."""

    first: RefInstance
    series: dict[str, str] = field(default_factory=dict)  # series UID → modality
    instances: list[RefInstance] = field(default_factory=list)

    @property
    def uid(self) -> str:
        return self.first.study_uid

    @property
    def modalities(self) -> set[str]:
        return {m for m in self.series.values() if m}


@dataclass
class Reference:
    """What the archive holds after ingesting ``instances`` in order."""

    instances: list[RefInstance]
    studies: dict[str, RefStudy]
    #: Patient ID → the patient's studies (no file in the selection has an issuer)
    patients: dict[str, list[RefStudy]]

    def instance(self, path: str) -> RefInstance:
        return next(i for i in self.instances if i.path == path)

    def studies_where(self, predicate: Callable[[RefStudy], bool]) -> set[str]:
        return {s.uid for s in self.studies.values() if predicate(s)}

    def patients_where(self, predicate: Callable[[RefStudy], bool]) -> set[str]:
        """Patients judged by their first study (patient rows keep first-seen values)."""
        return {pid for pid, studies in self.patients.items() if predicate(studies[0])}

    def series_where(self, predicate: Callable[[RefStudy, str, str], bool]) -> set[str]:
        return {
            uid
            for s in self.studies.values()
            for uid, modality in s.series.items()
            if predicate(s, uid, modality)
        }

    def instances_where(self, predicate: Callable[[RefInstance], bool]) -> set[str]:
        return {i.sop_uid for i in self.instances if predicate(i)}

    @property
    def total_bytes(self) -> int:
        return sum(i.size for i in self.instances)


def build_reference(
    root: Path,
    paths: list[str],
    corpus_manifest: list[dict[str, str]],
    vietnamese_manifest: list[dict[str, str]],
) -> Reference:
    rows = {r["path"]: r for r in corpus_manifest}
    vn_rows = {r["patient_id"]: r for r in vietnamese_manifest}
    instances = []
    for path in paths:
        ds = pydicom.dcmread(root / path, stop_before_pixels=True)
        row = rows.get(path)
        if row is not None:
            data = dict(
                sop_uid=row["sop_instance_uid"],
                series_uid=row["series_uid"],
                study_uid=row["study_uid"],
                sop_class_uid=row["sop_class_uid"],
                transfer_syntax_uid=row["transfer_syntax_uid"],
                modality=row["modality"],
                sha256=row["sha256"],
                size=int(row["size_bytes"]),
                patient_name=row["patient_name"],
                study_description=str(ds.get("StudyDescription", "") or ""),
            )
        else:  # vietnamese/: the manifest has the Unicode text, the file the UIDs
            vn = vn_rows[str(ds.PatientID)]
            raw = (root / path).read_bytes()
            assert str(ds.StudyInstanceUID) == vn["study_uid"]
            data = dict(
                sop_uid=str(ds.SOPInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
                study_uid=vn["study_uid"],
                sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                modality=str(ds.Modality),
                sha256=hashlib.sha256(raw).hexdigest(),
                size=len(raw),
                patient_name=vn["patient_name_unicode"],
                study_description=vn["study_description_unicode"],
            )
        number = ds.get("InstanceNumber")
        instances.append(
            RefInstance(
                path=path,
                instance_number=int(number) if number not in (None, "") else None,
                patient_id=str(ds.get("PatientID", "") or ""),
                study_date=_dicom_date(ds.get("StudyDate")),
                study_time=_dicom_time(ds.get("StudyTime")),
                accession_number=str(ds.get("AccessionNumber", "") or ""),
                **data,
            )
        )
    studies: dict[str, RefStudy] = {}
    patients: dict[str, list[RefStudy]] = {}
    for inst in instances:
        study = studies.get(inst.study_uid)
        if study is None:
            study = studies[inst.study_uid] = RefStudy(inst)
            patients.setdefault(inst.patient_id, []).append(study)
        study.series.setdefault(inst.series_uid, inst.modality)
        study.instances.append(inst)
    return Reference(instances, studies, patients)


# ---------------------------------------------------------------- archives under test


@contextmanager
def open_archive(url: str, data_dir: Path) -> Iterator[Archive]:
    """The real Archive on ``url`` (migrated) with a filesystem store under ``data_dir``."""
    engine = make_engine(url)
    try:
        upgrade(engine)
        settings = Settings(data_dir=data_dir, database_url=url, min_free_bytes=0)
        store = FilesystemObjectStore(data_dir / "objects")
        yield Archive(settings, store, SqlIndex(engine), node="contract:0")
    finally:
        engine.dispose()


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'index.sqlite'}"


def ingest(archive: Archive, root: Path, paths: list[str]) -> dict[str, StoreResult]:
    return {p: archive.store_file(root / p, source=SOURCE) for p in paths}


@dataclass
class Populated:
    backend: str
    archive: Archive
    ref: Reference
    results: dict[str, StoreResult]

    @property
    def engine(self) -> Engine:
        return self.archive.index.engine


@pytest.fixture(scope="module")
def ingested_paths(shared_dicom: Path, corpus_manifest: list[dict[str, str]]) -> list[str]:
    """The selection (checked against the manifest) followed by all Vietnamese files."""
    rows = {r["path"]: r for r in corpus_manifest}
    for path in CORPUS_SELECTION:
        assert path in rows, f"{path} is not in MANIFEST.csv"
        assert is_clean(rows[path]), f"{path} is flagged malformed in MANIFEST.csv"
    vietnamese = sorted(
        p.relative_to(shared_dicom).as_posix() for p in vietnamese_files(shared_dicom)
    )
    return [*CORPUS_SELECTION, *vietnamese]


@pytest.fixture(scope="module")
def reference(
    shared_dicom: Path,
    ingested_paths: list[str],
    corpus_manifest: list[dict[str, str]],
    vietnamese_manifest: list[dict[str, str]],
) -> Reference:
    return build_reference(shared_dicom, ingested_paths, corpus_manifest, vietnamese_manifest)


@pytest.fixture(scope="module")
def sqlite_populated(
    tmp_path_factory: pytest.TempPathFactory,
    shared_dicom: Path,
    ingested_paths: list[str],
    reference: Reference,
) -> Iterator[Populated]:
    data_dir = tmp_path_factory.mktemp("sqlite-archive")
    with open_archive(sqlite_url(data_dir), data_dir) as archive:
        results = ingest(archive, shared_dicom, ingested_paths)
        yield Populated("sqlite", archive, reference, results)


@pytest.fixture(scope="module")
def postgresql_populated(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresCluster,
    shared_dicom: Path,
    ingested_paths: list[str],
    reference: Reference,
) -> Iterator[Populated]:
    data_dir = tmp_path_factory.mktemp("postgresql-archive")
    url = postgres.create_database()
    try:
        with open_archive(url, data_dir) as archive:
            results = ingest(archive, shared_dicom, ingested_paths)
            yield Populated("postgresql", archive, reference, results)
    finally:
        postgres.drop_database(url.rsplit("/", 1)[-1])


@pytest.fixture(scope="module", params=BACKENDS)
def populated(request: pytest.FixtureRequest) -> Populated:
    """The populated archive on each backend in turn (read-only tests share it)."""
    return request.getfixturevalue(f"{request.param}_populated")


@pytest.fixture(params=BACKENDS)
def fresh_archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    """An empty archive on a new database of each backend (for tests that change data)."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    with open_archive(url, tmp_path / "data") as archive:
        yield archive


def found(archive: Archive, level: Level, criteria: dict[str, str], fuzzy: bool = False) -> set:
    """The unique keys of the rows a query returns (asserting no row comes twice)."""
    key = UNIQUE_KEY[level]
    rows = archive.search(Query(level, dict(criteria), fuzzy=fuzzy), [key])
    keys = [row[key] for row in rows]
    assert len(keys) == len(set(keys)), f"duplicate rows: {keys}"
    assert archive.count(Query(level, dict(criteria), fuzzy=fuzzy)) == len(keys)
    return set(keys)


# ---------------------------------------------------------------- schema and ingest


def test_migrations_reach_the_head_and_rerun_harmlessly(populated: Populated) -> None:
    assert schema_is_current(populated.engine)
    # A current schema is accepted without migrating (how production nodes start).
    ensure_schema(populated.engine, auto_migrate=False)
    upgrade(populated.engine)
    assert schema_is_current(populated.engine)


def test_every_file_was_stored(populated: Populated) -> None:
    # Vietnamese files share no SOP Instance UID; the selection avoids re-encodings.
    statuses = {p: r.status for p, r in populated.results.items()}
    assert set(statuses.values()) == {StoreStatus.STORED}, statuses


def test_totals_count_what_was_ingested(populated: Populated) -> None:
    ref = populated.ref
    assert populated.archive.totals() == {
        "patients": len(ref.patients),
        "studies": len(ref.studies),
        "series": sum(len(s.series) for s in ref.studies.values()),
        "instances": len(ref.instances),
        "bytes": ref.total_bytes,
    }


def test_every_instance_is_indexed_with_its_unchanged_bytes(populated: Populated) -> None:
    archive = populated.archive
    for inst in populated.ref.instances:
        ref = archive.instance(inst.sop_uid)
        assert (ref.study_uid, ref.series_uid) == (inst.study_uid, inst.series_uid)
        assert (ref.sha256, ref.size_bytes) == (inst.sha256, inst.size)
        assert ref.sop_class_uid == inst.sop_class_uid
        assert ref.transfer_syntax_uid == inst.transfer_syntax_uid
        assert ref.object_key == instance_key(inst.study_uid, inst.series_uid, inst.sop_uid)
        with archive.open(ref) as stream:
            assert hashlib.sha256(stream.read()).hexdigest() == inst.sha256


def test_study_rows_carry_counts_and_first_instance_attributes(populated: Populated) -> None:
    keywords = [
        "StudyInstanceUID",
        "PatientID",
        "PatientName",
        "StudyDate",
        "StudyTime",
        "StudyDescription",
        "AccessionNumber",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ]
    rows = populated.archive.search(Query(Level.STUDY), keywords)
    assert len(rows) == len(populated.ref.studies)
    for row in rows:
        study = populated.ref.studies[row["StudyInstanceUID"]]
        first = study.first
        assert row["PatientID"] == first.patient_id
        assert row["PatientName"] == first.patient_name
        assert row["StudyDate"] == first.study_date
        assert row["StudyTime"] == first.study_time
        assert row["StudyDescription"] == first.study_description
        assert row["AccessionNumber"] == first.accession_number
        assert set(filter(None, row["ModalitiesInStudy"].split("\\"))) == study.modalities
        assert row["NumberOfStudyRelatedSeries"] == len(study.series)
        assert row["NumberOfStudyRelatedInstances"] == len(study.instances)


def test_patient_rows_count_their_studies(populated: Populated) -> None:
    keywords = [
        "PatientID",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    ]
    rows = populated.archive.search(Query(Level.PATIENT), keywords)
    assert {r["PatientID"] for r in rows} == set(populated.ref.patients)
    for row in rows:
        studies = populated.ref.patients[row["PatientID"]]
        assert row["PatientName"] == studies[0].first.patient_name
        assert row["NumberOfPatientRelatedStudies"] == len(studies)
        assert row["NumberOfPatientRelatedSeries"] == sum(len(s.series) for s in studies)
        assert row["NumberOfPatientRelatedInstances"] == sum(len(s.instances) for s in studies)


# ---------------------------------------------------------------- PS3.4 matching


@dataclass(frozen=True)
class Case:
    """One query: its criteria and the keys it must find, both derived from the reference."""

    level: Level
    criteria: Callable[[Reference], dict[str, str]]
    expected: Callable[[Reference], set[str]]
    fuzzy: bool = False
    #: a known bug in pacs makes this case fail: the reason (the test is xfail strict)
    bug: str = ""

    def but(self, bug: str) -> Case:
        return dataclasses.replace(self, bug=bug)


def _study_of(path: str) -> Callable[[Reference], str]:
    return lambda ref: ref.instance(path).study_uid


def _series_of(path: str) -> Callable[[Reference], str]:
    return lambda ref: ref.instance(path).series_uid


def _dates(ref: Reference) -> list[str]:
    return sorted({s.first.study_date for s in ref.studies.values() if s.first.study_date})


def _low_date(ref: Reference) -> str:
    dates = _dates(ref)
    return dates[len(dates) // 4]


def _high_date(ref: Reference) -> str:
    dates = _dates(ref)
    return dates[3 * len(dates) // 4]


def _date_case(spec: Callable[[Reference], str]) -> Case:
    return Case(
        Level.STUDY,
        lambda ref: {"StudyDate": spec(ref)},
        lambda ref: ref.studies_where(lambda s: date_matches(spec(ref), s.first.study_date)),
    )


def _time_case(spec: str) -> Case:
    return Case(
        Level.STUDY,
        lambda ref: {"StudyTime": spec},
        lambda ref: ref.studies_where(lambda s: time_matches(spec, s.first.study_time)),
    )


def _patient_id_case(spec: str) -> Case:
    return Case(
        Level.PATIENT,
        lambda ref: {"PatientID": spec},
        lambda ref: ref.patients_where(lambda s: glob(spec, s.first.patient_id) if spec else True),
    )


def _pn_case(level: Level, query: str) -> Case:
    if level is Level.PATIENT:
        return Case(
            level,
            lambda ref: {"PatientName": query},
            lambda ref: ref.patients_where(lambda s: pn_matches(query, s.first.patient_name)),
        )
    return Case(
        level,
        lambda ref: {"PatientName": query},
        lambda ref: ref.studies_where(lambda s: pn_matches(query, s.first.patient_name)),
    )


def _fuzzy_case(level: Level, keyword: str, query: str) -> Case:
    def value(s: RefStudy) -> str:
        return s.first.patient_name if keyword == "PatientName" else s.first.study_description

    if level is Level.PATIENT:
        return Case(
            level,
            lambda ref: {keyword: query},
            lambda ref: ref.patients_where(lambda s: fuzzy_matches(query, value(s))),
            fuzzy=True,
        )
    return Case(
        level,
        lambda ref: {keyword: query},
        lambda ref: ref.studies_where(lambda s: fuzzy_matches(query, value(s))),
        fuzzy=True,
    )


def _modalities_case(spec: str) -> Case:
    return Case(
        Level.STUDY,
        lambda ref: {"ModalitiesInStudy": spec},
        lambda ref: ref.studies_where(lambda s: modalities_match(spec, s.modalities)),
    )


def _all_studies(ref: Reference) -> set[str]:
    return set(ref.studies)


MATCHING_CASES = {
    # PATIENT level
    "patient-id-single": _patient_id_case("77654033"),
    "patient-id-universal": _patient_id_case(""),
    "patient-id-star": _patient_id_case("*"),
    "patient-id-question-mark": _patient_id_case("VN01000?"),
    "patient-id-star-inside": _patient_id_case("VN*3"),
    "patient-id-case-sensitive": _patient_id_case("vn010000"),
    # STUDY level
    "study-uid-single": Case(
        Level.STUDY,
        lambda ref: {"StudyInstanceUID": _study_of(CT_SMALL)(ref)},
        lambda ref: {_study_of(CT_SMALL)(ref)},
    ),
    "study-uid-list": Case(
        Level.STUDY,
        lambda ref: {
            "StudyInstanceUID": "\\".join(
                [_study_of(CT_SMALL)(ref), _study_of(DOE_CR_STUDY[0])(ref), "1.2.3.4.404"]
            )
        },
        lambda ref: {_study_of(CT_SMALL)(ref), _study_of(DOE_CR_STUDY[0])(ref)},
    ),
    "study-universal": Case(Level.STUDY, lambda ref: {"StudyInstanceUID": ""}, _all_studies),
    "study-date-single": _date_case(_low_date),
    "study-date-range": _date_case(lambda ref: f"{_low_date(ref)}-{_high_date(ref)}"),
    "study-date-from": _date_case(lambda ref: f"{_high_date(ref)}-"),
    "study-date-until": _date_case(lambda ref: f"-{_low_date(ref)}"),
    "study-date-universal": Case(Level.STUDY, lambda ref: {"StudyDate": ""}, _all_studies),
    "study-time-single": _time_case("093000"),
    "study-time-range": _time_case("0700-0800"),
    "study-time-from": _time_case("1800-"),
    "study-time-until": _time_case("-0800"),
    "study-time-range-with-fraction": _time_case("132645.9-132646"),
    "study-time-hhmm-stored-single": _time_case("1200"),
    "study-time-hhmm-stored-range": _time_case("1200-1230"),
    "study-accession-single": Case(
        Level.STUDY,
        lambda ref: {"AccessionNumber": "A100002"},
        lambda ref: ref.studies_where(lambda s: s.first.accession_number == "A100002"),
    ),
    "study-description-wildcard": Case(
        Level.STUDY,
        lambda ref: {"StudyDescription": "CT*"},
        lambda ref: ref.studies_where(lambda s: glob("CT*", s.first.study_description)),
    ),
    # SERIES level
    "series-in-study": Case(
        Level.SERIES,
        lambda ref: {"StudyInstanceUID": _study_of(DOE_CR_STUDY[0])(ref)},
        lambda ref: ref.series_where(lambda s, uid, m: s.uid == _study_of(DOE_CR_STUDY[0])(ref)),
    ),
    "series-modality-single": Case(
        Level.SERIES,
        lambda ref: {"Modality": "CR"},
        lambda ref: ref.series_where(lambda s, uid, m: m == "CR"),
    ),
    "series-modality-wildcards": Case(
        Level.SERIES,
        lambda ref: {"Modality": "?T*"},
        lambda ref: ref.series_where(lambda s, uid, m: glob("?T*", m)),
    ),
    "series-uid-list": Case(
        Level.SERIES,
        lambda ref: {"SeriesInstanceUID": "\\".join(_series_of(p)(ref) for p in DOE_CR_STUDY[:2])},
        lambda ref: {_series_of(p)(ref) for p in DOE_CR_STUDY[:2]},
    ),
    "series-modality-and-study-date": Case(
        Level.SERIES,
        lambda ref: {"Modality": "CT", "StudyDate": f"-{_low_date(ref)}"},
        lambda ref: ref.series_where(
            lambda s, uid, m: m == "CT" and date_matches(f"-{_low_date(ref)}", s.first.study_date)
        ),
    ),
    # IMAGE level
    "image-in-series": Case(
        Level.IMAGE,
        lambda ref: {"SeriesInstanceUID": _series_of(DOE_CT_STUDY[0])(ref)},
        lambda ref: ref.instances_where(lambda i: i.series_uid == _series_of(DOE_CT_STUDY[0])(ref)),
    ),
    "image-sop-uid-list": Case(
        Level.IMAGE,
        lambda ref: {
            "SOPInstanceUID": "\\".join(ref.instance(p).sop_uid for p in DOE_CT_STUDY[1:3])
        },
        lambda ref: {ref.instance(p).sop_uid for p in DOE_CT_STUDY[1:3]},
    ),
    "image-sop-class-single": Case(
        Level.IMAGE,
        lambda ref: {"SOPClassUID": ref.instance(CT_SMALL).sop_class_uid},
        lambda ref: ref.instances_where(
            lambda i: i.sop_class_uid == ref.instance(CT_SMALL).sop_class_uid
        ),
    ),
    "image-instance-number-in-series": Case(
        Level.IMAGE,
        lambda ref: {
            "SeriesInstanceUID": _series_of(DOE_CT_STUDY[0])(ref),
            "InstanceNumber": str(ref.instance(DOE_CT_STUDY[2]).instance_number),
        },
        lambda ref: {ref.instance(DOE_CT_STUDY[2]).sop_uid},
    ),
    "image-patient-id-wildcard": Case(
        Level.IMAGE,
        lambda ref: {"PatientID": "VN*", "Modality": "CT"},
        lambda ref: ref.instances_where(
            lambda i: i.patient_id.startswith("VN") and i.modality == "CT"
        ),
    ),
}

PN_CASES = {
    f"{level.value.lower()}:{query}": _pn_case(level, query)
    for level in (Level.STUDY, Level.PATIENT)
    for query in (
        "nguyen thi*",
        "NGUYỄN*",
        "*nhung",
        "?guyen*",
        "nguyễn^thị hồng nhung",
        "LE^MINH DUC",
        "doe^archibald",
        "BUC^JEROME",
        "äneas*",
        "*tarou*",
        "山田*",
        "nguyen",
    )
}

FUZZY_CASES = {
    f"{level.value.lower()}:{keyword}:{query}": _fuzzy_case(level, keyword, query)
    for level, keyword, query in (
        (Level.STUDY, "PatientName", "nhung"),
        (Level.STUDY, "PatientName", "NHUNG"),
        (Level.STUDY, "PatientName", "nhung nguyen"),
        (Level.STUDY, "PatientName", "thi"),
        (Level.STUDY, "PatientName", "duc"),
        (Level.STUDY, "PatientName", "thu ha"),
        (Level.STUDY, "PatientName", "hong hoa"),
        (Level.STUDY, "StudyDescription", "ct so"),
        (Level.STUDY, "StudyDescription", "cột sống"),
        (Level.STUDY, "StudyDescription", "ngực"),
        (Level.STUDY, "StudyDescription", "contrast head"),
        (Level.PATIENT, "PatientName", "nhung"),
        (Level.PATIENT, "PatientName", "thi"),
    )
}

MODALITY_CASES = {
    spec: _modalities_case(spec) for spec in ("CR", "CT\\OT", "SEG", "OT", "MR\\PT\\MG", "XA")
}

ALL_CASES = {**MATCHING_CASES, **PN_CASES, **FUZZY_CASES, **MODALITY_CASES}


def _case_params(cases: dict[str, Case]) -> list[Any]:
    return [
        pytest.param(
            case,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else [],
        )
        for name, case in cases.items()
    ]


def _run_case(populated: Populated, case: Case) -> None:
    ref = populated.ref
    expected = case.expected(ref)
    got = found(populated.archive, case.level, case.criteria(ref), fuzzy=case.fuzzy)
    assert got == expected


@pytest.mark.parametrize("case", _case_params(MATCHING_CASES))
def test_ps34_matching(populated: Populated, case: Case) -> None:
    _run_case(populated, case)


@pytest.mark.parametrize("case", _case_params(PN_CASES))
def test_person_names_match_without_case_or_diacritics(populated: Populated, case: Case) -> None:
    _run_case(populated, case)


@pytest.mark.parametrize("case", _case_params(FUZZY_CASES))
def test_fuzzy_matching_is_word_prefix_in_any_order(populated: Populated, case: Case) -> None:
    _run_case(populated, case)


@pytest.mark.parametrize("case", _case_params(MODALITY_CASES))
def test_modalities_in_study_matches_any_listed_modality(populated: Populated, case: Case) -> None:
    _run_case(populated, case)


# Cases whose right answer is "nothing".
EXPECTED_EMPTY = {
    "patient-id-case-sensitive",  # LO/SH/CS single values match case-sensitively
    "study:nguyen",  # PN single value: the whole name, not a word of it
    "patient:nguyen",
    "study:PatientName:hong hoa",  # fuzzy: every word must match
    "XA",
}


def test_the_battery_is_not_vacuous(reference: Reference) -> None:
    """Cases find something (unless meant not to) and every kind of attribute is queried."""
    empty = {name for name, case in ALL_CASES.items() if not case.expected(reference)}
    assert empty == EXPECTED_EMPTY
    kinds = {
        attributes_for(case.level)[keyword].kind
        for case in ALL_CASES.values()
        for keyword in case.criteria(reference)
    }
    assert kinds == set(Kind) - {Kind.RETURN_ONLY}


@pytest.mark.parametrize("encoding", VIETNAMESE_ENCODINGS)
def test_vietnamese_names_are_found_by_their_unicode_names(
    populated: Populated, vietnamese_manifest: list[dict[str, str]], encoding: str
) -> None:
    """Every way modalities write Vietnamese is indexed as the intended Unicode text."""
    assert sorted(r["encoding"] for r in vietnamese_manifest) == sorted(VIETNAMESE_ENCODINGS)
    row = next(r for r in vietnamese_manifest if r["encoding"] == encoding)
    name = row["patient_name_unicode"]
    archive = populated.archive
    for query in (name, name.upper(), strip_diacritics(name).lower()):
        rows = archive.search(
            Query(Level.STUDY, {"PatientName": query}),
            [
                "StudyInstanceUID",
                "PatientName",
                "StudyDescription",
                "NumberOfStudyRelatedInstances",
            ],
        )
        assert rows == [
            {
                "StudyInstanceUID": row["study_uid"],
                "PatientName": name,
                "StudyDescription": row["study_description_unicode"],
                "NumberOfStudyRelatedInstances": int(row["instances"]),
            }
        ], query
        assert found(archive, Level.PATIENT, {"PatientName": query}) == {row["patient_id"]}


# ---------------------------------------------------------------- order and paging


@pytest.mark.parametrize(
    ("level", "order_by", "sort_key"),
    [
        (Level.STUDY, [("PatientID", False)], "PatientID"),
        (Level.STUDY, [("StudyDate", True)], "StudyDate"),
        (Level.SERIES, [("Modality", False)], "Modality"),
        (Level.IMAGE, [("SOPInstanceUID", True)], "SOPInstanceUID"),
        (Level.PATIENT, [("PatientID", True)], "PatientID"),
    ],
    ids=[
        "study-by-patient-id",
        "study-by-date-desc",
        "series-by-modality",
        "image-desc",
        "patient",
    ],
)
def test_pages_follow_the_order_without_overlap(
    populated: Populated, level: Level, order_by: list[tuple[str, bool]], sort_key: str
) -> None:
    archive = populated.archive
    unique = UNIQUE_KEY[level]
    keywords = list(dict.fromkeys([unique, sort_key]))
    everything = archive.search(Query(level, order_by=order_by), keywords)
    values = [row[sort_key] for row in everything]
    descending = order_by[0][1]
    assert values == sorted(values, reverse=descending)
    page_size = 7
    pages = []
    for offset in range(0, len(everything) + page_size, page_size):
        page = archive.search(
            Query(level, order_by=order_by, limit=page_size, offset=offset), keywords
        )
        assert len(page) <= page_size
        pages += page
    assert pages == everything
    assert len({row[unique] for row in pages}) == len(pages)


def test_default_study_order_is_newest_first(populated: Populated) -> None:
    rows = populated.archive.search(Query(Level.STUDY), ["StudyDate", "StudyTime"])
    keys = [(r["StudyDate"], r["StudyTime"]) for r in rows]
    assert keys == sorted(keys, reverse=True)


def test_image_level_lists_a_series_by_instance_number(populated: Populated) -> None:
    series = populated.ref.instance(DOE_CT_STUDY[0]).series_uid
    rows = populated.archive.search(
        Query(Level.IMAGE, {"SeriesInstanceUID": series}), ["SOPInstanceUID", "InstanceNumber"]
    )
    expected = sorted(
        (i.instance_number, i.sop_uid) for i in populated.ref.instances if i.series_uid == series
    )
    assert [(r["InstanceNumber"], r["SOPInstanceUID"]) for r in rows] == expected


# ---------------------------------------------------------------- both backends agree


WHOLE_LEVEL_QUERIES = {
    **{f"{level.value.lower()}-all": Query(level) for level in Level},
    **{f"{level.value.lower()}-page": Query(level, limit=5, offset=3) for level in Level},
}
# The corpus has an ECG series without SeriesNumber and an RT Plan without InstanceNumber:
# the whole-level queries also check that NULLs sort the same way on both backends.


def _agreement_params() -> list[Any]:
    return [pytest.param(name, id=name) for name in ALL_CASES] + [
        pytest.param(name, id=name) for name in WHOLE_LEVEL_QUERIES
    ]


@pytest.mark.parametrize("name", _agreement_params())
def test_sqlite_and_postgresql_return_identical_rows(
    sqlite_populated: Populated, postgresql_populated: Populated, name: str
) -> None:
    """Every query, with every attribute its level knows: the same rows in the same order."""
    case = ALL_CASES.get(name)
    if case is not None:
        query = Query(case.level, case.criteria(sqlite_populated.ref), fuzzy=case.fuzzy)
    else:
        query = WHOLE_LEVEL_QUERIES[name]
    keywords = list(attributes_for(query.level))
    lite = sqlite_populated.archive.search(query, keywords)
    pg = postgresql_populated.archive.search(query, keywords)
    assert lite == pg


def test_sqlite_and_postgresql_agree_on_totals(
    sqlite_populated: Populated, postgresql_populated: Populated
) -> None:
    assert sqlite_populated.archive.totals() == postgresql_populated.archive.totals()


# ---------------------------------------------------------------- changes (fresh archives)


def test_the_same_bytes_twice_are_a_duplicate(fresh_archive: Archive, shared_dicom: Path) -> None:
    first = fresh_archive.store_file(shared_dicom / CT_SMALL, source=SOURCE)
    again = fresh_archive.store_file(shared_dicom / CT_SMALL, source=SOURCE)
    assert (first.status, again.status) == (StoreStatus.STORED, StoreStatus.DUPLICATE)
    assert fresh_archive.totals()["instances"] == 1
    assert len(list(fresh_archive.objects.iter_objects())) == 1


def test_different_bytes_under_a_known_sop_uid_replace_it(
    fresh_archive: Archive, shared_dicom: Path, corpus_manifest: list[dict[str, str]]
) -> None:
    rows = {r["path"]: r for r in corpus_manifest}
    versions = [MR_SMALL] + [p for p in same_sop_siblings(rows[MR_SMALL]) if is_clean(rows[p])]
    assert len(versions) >= 3, "the manifest should list clean re-encodings of MR_small"
    results = [fresh_archive.store_file(shared_dicom / p, source=SOURCE) for p in versions]
    assert [r.status for r in results] == [StoreStatus.STORED] + [StoreStatus.REPLACED] * (
        len(versions) - 1
    )
    last = rows[versions[-1]]
    stored = fresh_archive.instance(last["sop_instance_uid"])
    assert (stored.sha256, stored.size_bytes) == (last["sha256"], int(last["size_bytes"]))
    assert stored.transfer_syntax_uid == last["transfer_syntax_uid"]
    assert fresh_archive.totals() == {
        "patients": 1,
        "studies": 1,
        "series": 1,
        "instances": 1,
        "bytes": int(last["size_bytes"]),
    }
    assert [o.key for o in fresh_archive.objects.iter_objects()] == [stored.object_key]
    with fresh_archive.open(stored) as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == last["sha256"]


@pytest.mark.parametrize(
    ("policy", "outcome"), [("keep", StoreStatus.KEPT_EXISTING), ("reject", DuplicateInstance)]
)
def test_duplicate_policy_keep_or_reject_leaves_the_first_version(
    fresh_archive: Archive,
    shared_dicom: Path,
    corpus_manifest: list[dict[str, str]],
    policy: str,
    outcome: Any,
) -> None:
    rows = {r["path"]: r for r in corpus_manifest}
    other = next(p for p in same_sop_siblings(rows[MR_SMALL]) if is_clean(rows[p]))
    fresh_archive.settings = fresh_archive.settings.with_overrides(duplicate_policy=policy)
    fresh_archive.store_file(shared_dicom / MR_SMALL, source=SOURCE)
    if outcome is DuplicateInstance:
        with pytest.raises(DuplicateInstance):
            fresh_archive.store_file(shared_dicom / other, source=SOURCE)
    else:
        assert fresh_archive.store_file(shared_dicom / other, source=SOURCE).status is outcome
    assert (
        fresh_archive.instance(rows[MR_SMALL]["sop_instance_uid"]).sha256
        == (rows[MR_SMALL]["sha256"])
    )
    assert fresh_archive.totals()["instances"] == 1


def test_later_instances_of_a_series_are_indexed_like_the_first(
    fresh_archive: Archive, shared_dicom: Path
) -> None:
    """The first instance of a series creates its rows; the next ones take the cached
    series on the driver's cursor (SqlIndex._record_known_series). Both write the
    same columns, readable through SQLAlchemy's types."""
    results = ingest(fresh_archive, shared_dicom, list(DOE_CT_STUDY))
    sizes = {r.sop_instance_uid: r.size_bytes for r in results.values()}
    with fresh_archive.index.engine.connect() as conn:
        rows = conn.execute(
            select(Instance.sop_uid, Instance.size_bytes, Instance.source_ae, Instance.received_at)
        ).all()
        series = conn.execute(select(Series.num_instances, Series.size_bytes)).one()
        study = conn.execute(select(Study.num_series, Study.num_instances, Study.size_bytes)).one()
        intents = conn.execute(select(func.count(StoreIntent.id))).scalar_one()
    assert {r.sop_uid: r.size_bytes for r in rows} == sizes
    assert {r.source_ae for r in rows} == {"CONTRACT"}
    now = datetime.now(UTC)
    for row in rows:
        received = aware(row.received_at)
        assert received is not None and abs((now - received).total_seconds()) < 300
    assert tuple(series) == (4, sum(sizes.values()))
    assert tuple(study) == (1, 4, sum(sizes.values()))
    assert intents == 0


def test_a_series_another_writer_removed_is_created_again(
    fresh_archive: Archive, shared_dicom: Path
) -> None:
    """A worker's cached series may be gone: another worker deleted the study. The
    next instance must recreate the rows, not count into nothing."""
    archive = fresh_archive
    first = archive.store_file(shared_dicom / DOE_CT_STUDY[0], source=SOURCE)
    other_worker = SqlIndex(archive.index.engine)
    assert (
        other_worker.delete_instances(archive.index.instances(study_uid=first.study_instance_uid))
        == 1
    )
    assert archive.totals()["studies"] == 0
    second = archive.store_file(shared_dicom / DOE_CT_STUDY[1], source=SOURCE)
    assert second.status is StoreStatus.STORED
    assert archive.totals() == {
        "patients": 1,
        "studies": 1,
        "series": 1,
        "instances": 1,
        "bytes": second.size_bytes,
    }
    [ref] = archive.index.instances(study_uid=second.study_instance_uid)
    assert ref.sop_uid == second.sop_instance_uid


def test_deleting_instances_cascades_to_series_studies_and_patients(
    fresh_archive: Archive, shared_dicom: Path
) -> None:
    archive = fresh_archive
    paths = [CT_SMALL, CT_SMALL_PARAMETRIC_MAP, *DOE_CR_STUDY, *DOE_CT_STUDY]
    results = ingest(archive, shared_dicom, paths)
    ct_small_study = results[CT_SMALL].study_instance_uid
    cr_study = results[DOE_CR_STUDY[0]].study_instance_uid
    ct_study = results[DOE_CT_STUDY[0]].study_instance_uid
    doe = "77654033"

    def study_row(uid: str) -> list[dict[str, Any]]:
        return archive.search(
            Query(Level.STUDY, {"StudyInstanceUID": uid}),
            ["ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
        )

    # Removing one series of a two-series study keeps the study, with its modalities updated.
    parametric = archive.instances(sop_uids=[results[CT_SMALL_PARAMETRIC_MAP].sop_instance_uid])
    assert archive.delete(parametric) == 1
    assert study_row(ct_small_study) == [
        {
            "ModalitiesInStudy": "CT",
            "NumberOfStudyRelatedSeries": 1,
            "NumberOfStudyRelatedInstances": 1,
        }
    ]

    # Removing a whole study removes its series; the patient keeps the other study.
    cr_refs = archive.instances(study_uid=cr_study)
    assert archive.delete(cr_refs) == len(DOE_CR_STUDY)
    assert study_row(cr_study) == []
    assert found(archive, Level.SERIES, {"StudyInstanceUID": cr_study}) == set()
    assert not any(archive.objects.exists(r.object_key) for r in cr_refs)
    patient = archive.search(
        Query(Level.PATIENT, {"PatientID": doe}), ["NumberOfPatientRelatedStudies"]
    )
    assert patient == [{"NumberOfPatientRelatedStudies": 1}]

    # Removing the patient's last study removes the patient and its search words.
    assert archive.delete(archive.instances(study_uid=ct_study)) == len(DOE_CT_STUDY)
    assert found(archive, Level.PATIENT, {"PatientID": doe}) == set()
    assert found(archive, Level.STUDY, {"PatientName": "archibald"}, fuzzy=True) == set()
    assert found(archive, Level.IMAGE, {"PatientID": doe}) == set()

    assert archive.totals() == {
        "patients": 1,
        "studies": 1,
        "series": 1,
        "instances": 1,
        "bytes": results[CT_SMALL].size_bytes,
    }
    assert [o.key for o in archive.objects.iter_objects()] == [
        archive.instance(results[CT_SMALL].sop_instance_uid).object_key
    ]
    # Deleting what is already gone is a no-op.
    assert archive.delete(cr_refs) == 0


# Study- and patient-level attributes come from the first instance the index sees, and
# reindex sees instances in the object store's listing order. So left out here: StudyTime,
# PatientBirthDate and PatientSex, on which the Vietnamese studies' instances disagree, and
# the patient-level PatientName, as every file without a Patient ID is filed under one
# patient "" whose name is that of the first such file.
REINDEX_KEYWORDS = {
    Level.PATIENT: ["PatientID", "NumberOfPatientRelatedInstances"],
    Level.STUDY: [
        "StudyInstanceUID",
        "PatientID",
        "PatientName",
        "StudyDate",
        "AccessionNumber",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ],
    Level.SERIES: [
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "Modality",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
    ],
    Level.IMAGE: [k for k, a in attributes_for(Level.IMAGE).items() if a.level is Level.IMAGE],
}


def _dump(archive: Archive) -> dict[str, Any]:
    def canonical(rows: list[dict[str, Any]]) -> list[tuple]:
        return sorted(tuple(sorted((k, str(v)) for k, v in r.items())) for r in rows)

    dump: dict[str, Any] = {
        level.value: canonical(archive.search(Query(level), keywords))
        for level, keywords in REINDEX_KEYWORDS.items()
    }
    dump["refs"] = sorted(archive.instances(), key=lambda r: r.sop_uid)
    dump["totals"] = archive.totals()
    dump["fuzzy"] = found(archive, Level.STUDY, {"PatientName": "nhung"}, fuzzy=True)
    return dump


def test_verify_passes_and_reindex_rebuilds_the_same_rows(
    fresh_archive: Archive, shared_dicom: Path
) -> None:
    archive = fresh_archive
    paths = [
        *CORPUS_SELECTION,
        *(p.relative_to(shared_dicom).as_posix() for p in vietnamese_files(shared_dicom)),
    ]
    ingest(archive, shared_dicom, paths)
    before = _dump(archive)

    report = archive.verify()
    assert report.ok, report
    assert report.checked == len(paths)

    assert archive.reindex() == {"indexed": len(paths), "invalid": 0}
    assert _dump(archive) == before
    assert archive.verify().ok


def test_verify_reports_missing_corrupted_and_orphaned_objects(
    fresh_archive: Archive, shared_dicom: Path
) -> None:
    archive = fresh_archive
    results = ingest(archive, shared_dicom, list(DOE_CT_STUDY))
    refs = archive.instances(sop_uids=[r.sop_instance_uid for r in results.values()])
    missing, corrupted = refs[0].object_key, refs[1].object_key
    archive.objects.delete(missing)
    archive.objects.put_bytes(corrupted, b"not the archived bytes")
    orphan = instance_key("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.3")
    archive.objects.put_bytes(orphan, (shared_dicom / CT_SMALL).read_bytes())

    report = archive.verify()
    assert (report.missing, report.corrupted, report.orphans) == ([missing], [corrupted], [orphan])
    assert report.checked == len(DOE_CT_STUDY)
    assert not report.ok
