"""Grow an archive's index with synthetic studies, for query benchmarks at scale.

Rows go straight into the index through ``SqlIndex.record_instance`` (no object
files), one instance per study, with Vietnamese and Western names, dates over
ten years and a mix of modalities — enough to measure C-FIND, QIDO and worklist
searches against 100 000 studies without sending 100 000 files.

``--bulk`` writes the same kind of rows with multi-row INSERTs, batch by batch
(patients, studies, their search words, series, instances), and
``--instances-per-study`` gives each study's series that many instances: a
million instances in about a minute, for benchmarks only (no store intents, no
checks a real ingest makes).

    python bench/populate_index.py --data-dir /tmp/bigpacs --studies 100000
    python bench/populate_index.py --database-url postgresql+psycopg://... --studies 1000000
    python bench/populate_index.py --database-url postgresql+psycopg://... \
        --studies 100000 --instances-per-study 10 --bulk
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from pathlib import Path

from sqlalchemy import Engine, insert, select

from pacs.charset import fold
from pacs.config import load_settings
from pacs.dicomfile import InstanceHeader
from pacs.storage.database import ensure_schema, make_engine, writer
from pacs.storage.index import SqlIndex, utcnow
from pacs.storage.models import Instance, Patient, SearchToken, Series, Study

FAMILY = [
    "Nguyễn",
    "Trần",
    "Lê",
    "Phạm",
    "Hoàng",
    "Huỳnh",
    "Phan",
    "Vũ",
    "Võ",
    "Đặng",
    "Bùi",
    "Đỗ",
    "Hồ",
    "Ngô",
    "Dương",
    "Lý",
    "SMITH",
    "JONES",
    "MARTIN",
    "GARCIA",
]
MIDDLE = ["Văn", "Thị", "Hữu", "Đức", "Minh", "Ngọc", "Thanh", "Quốc", "Xuân", "Hồng"]
GIVEN = [
    "An",
    "Bình",
    "Châu",
    "Dũng",
    "Giang",
    "Hà",
    "Hải",
    "Hạnh",
    "Hùng",
    "Lan",
    "Linh",
    "Mai",
    "Nam",
    "Nhung",
    "Phúc",
    "Quang",
    "Sơn",
    "Tâm",
    "Thảo",
    "Trang",
    "Tuấn",
    "Vy",
]
MODALITIES = ["CT", "CT", "CT", "MR", "MR", "CR", "DX", "US", "US", "MG", "XA"]
DESCRIPTIONS = [
    "CT sọ não",
    "CT ngực",
    "CT bụng có tiêm thuốc",
    "MRI cột sống thắt lưng",
    "X-quang ngực thẳng",
    "Siêu âm bụng tổng quát",
    "Chụp nhũ ảnh",
    "MRI sọ não",
]
ROOT = "1.2.826.0.1.3680043.8.498."


def uid(*parts: object) -> str:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return (ROOT + str(int.from_bytes(digest[:16], "big")))[:64]


def header(n: int, rng: random.Random) -> InstanceHeader:
    name = f"{rng.choice(FAMILY)}^{rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
    year = 2016 + rng.randrange(10)
    date = f"{year}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
    modality = rng.choice(MODALITIES)
    return InstanceHeader(
        sop_instance_uid=uid("sop", n),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid=uid("study", n),
        series_instance_uid=uid("series", n),
        patient_id=f"BN{n // 3:08d}",
        issuer_of_patient_id="",
        patient_name=name,
        patient_birth_date=f"{rng.randrange(1935, 2020)}0{rng.randrange(1, 10)}15",
        patient_sex=rng.choice("MF"),
        study_date=date,
        study_time=f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00",
        accession_number=f"ACC{n:09d}",
        study_id=str(n % 100000),
        study_description=rng.choice(DESCRIPTIONS),
        referring_physician=f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}",
        institution="Bệnh viện Đa khoa tỉnh",
        modality=modality,
        series_number=1,
        series_description="",
        body_part="",
        series_date=date,
        series_time="",
        station_name="",
        instance_number=1,
        rows=512,
        columns=512,
        frames=1,
        bits_allocated=16,
        specific_character_set="ISO_IR 192",
        repaired_codec=None,
        dataset_offset=0,
    )


def _words(text: str) -> set[str]:
    return {w[:64] for w in fold(text).replace("=", " ").split() if w}


def _instance_rows(
    h: InstanceHeader, series_pk: int, n: int, count: int, now: object
) -> list[dict[str, object]]:
    rows = []
    for i in range(count):
        sop = h.sop_instance_uid if i == 0 else uid("sop", n, i)
        key = f"{h.study_instance_uid}/{h.series_instance_uid}/{sop}.dcm"
        rows.append(
            {
                "sop_uid": sop,
                "series_pk": series_pk,
                "sop_class_uid": h.sop_class_uid,
                "transfer_syntax_uid": h.transfer_syntax_uid,
                "instance_number": i + 1,
                "rows": 512,
                "columns": 512,
                "frames": 1,
                "bits_allocated": 16,
                "object_key": key,
                "dataset_offset": 0,
                "size_bytes": 1000,
                "sha256": "0" * 64,
                "source_ae": "BENCH",
                "received_at": now,
            }
        )
    return rows


def bulk_load(
    engine: Engine, start: int, count: int, per_study: int, seed: int, batch: int = 2000
) -> None:
    """Insert ``count`` studies of one series of ``per_study`` instances, batch by batch."""
    rng = random.Random(seed + start)
    write = writer(engine)
    patients: dict[str, int] = {}
    started = time.perf_counter()
    for first in range(start, start + count, batch):
        headers = [header(n, rng) for n in range(first, min(first + batch, start + count))]
        now = utcnow()
        with write.begin() as conn:
            wanted = sorted({h.patient_id for h in headers} - set(patients))
            if wanted:
                found = conn.execute(
                    select(Patient.patient_id, Patient.id).where(Patient.patient_id.in_(wanted))
                )
                patients.update({pid: pk for pid, pk in found})
            new = {h.patient_id: h for h in headers if h.patient_id not in patients}
            if new:
                rows = conn.execute(
                    insert(Patient).returning(
                        Patient.patient_id, Patient.id, sort_by_parameter_order=True
                    ),
                    [
                        {
                            "patient_id": h.patient_id,
                            "issuer": "",
                            "name": h.patient_name,
                            "name_key": fold(h.patient_name),
                            "birth_date": h.patient_birth_date,
                            "sex": h.patient_sex,
                            "created_at": now,
                        }
                        for h in new.values()
                    ],
                )
                patients.update({pid: pk for pid, pk in rows})
            study_pks = (
                conn.execute(
                    insert(Study).returning(Study.id, sort_by_parameter_order=True),
                    [
                        {
                            "study_uid": h.study_instance_uid,
                            "patient_pk": patients[h.patient_id],
                            "patient_id": h.patient_id,
                            "patient_name": h.patient_name,
                            "patient_name_key": fold(h.patient_name),
                            "patient_birth_date": h.patient_birth_date,
                            "patient_sex": h.patient_sex,
                            "study_date": h.study_date,
                            "study_time": h.study_time,
                            "accession_number": h.accession_number,
                            "study_id": h.study_id,
                            "description": h.study_description,
                            "description_key": fold(h.study_description)[:64],
                            "referring_physician": h.referring_physician,
                            "referring_physician_key": fold(h.referring_physician),
                            "institution": h.institution,
                            "charset": h.specific_character_set,
                            "modalities": h.modality,
                            "num_series": 1,
                            "num_instances": per_study,
                            "size_bytes": 1000 * per_study,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for h in headers
                    ],
                )
                .scalars()
                .all()
            )
            tokens = [
                {"study_pk": pk, "field": name, "token": token}
                for pk, h in zip(study_pks, headers, strict=True)
                for name, text in (
                    ("patient", h.patient_name),
                    ("referring", h.referring_physician),
                    ("description", h.study_description),
                )
                for token in _words(text)
            ]
            conn.execute(insert(SearchToken), tokens)
            series_pks = (
                conn.execute(
                    insert(Series).returning(Series.id, sort_by_parameter_order=True),
                    [
                        {
                            "series_uid": h.series_instance_uid,
                            "study_pk": pk,
                            "modality": h.modality,
                            "series_number": 1,
                            "description": "",
                            "body_part": "",
                            "series_date": h.series_date,
                            "series_time": "",
                            "station_name": "",
                            "source_ae": "BENCH",
                            "num_instances": per_study,
                            "size_bytes": 1000 * per_study,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for pk, h in zip(study_pks, headers, strict=True)
                    ],
                )
                .scalars()
                .all()
            )
            instances = [
                row
                for pk, h, n in zip(series_pks, headers, range(first, first + batch), strict=False)
                for row in _instance_rows(h, pk, n, per_study, now)
            ]
            conn.execute(insert(Instance), instances)
        done = first + len(headers) - start
        if done % 10_000 < batch:
            rate = done * per_study / (time.perf_counter() - started)
            print(f"{first + len(headers)} studies ({rate:.0f} instances/s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/pacs-bench-index"))
    parser.add_argument("--database-url", default="")
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--start", type=int, default=0, help="first study number (to grow further)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--instances-per-study", type=int, default=1, help="instances in each study's series"
    )
    parser.add_argument("--bulk", action="store_true", help="multi-row INSERTs, batch by batch")
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir, database_url=args.database_url or None)
    engine = make_engine(settings.effective_database_url, sqlite_synchronous="NORMAL")
    ensure_schema(engine, auto_migrate=True)
    index = SqlIndex(engine)
    if args.bulk or args.instances_per_study > 1:
        bulk_load(engine, args.start, args.studies, args.instances_per_study, args.seed)
        print(index.totals())
        return
    rng = random.Random(args.seed + args.start)
    started = time.perf_counter()
    for n in range(args.start, args.start + args.studies):
        h = header(n, rng)
        index.record_instance(
            h,
            object_key=f"{h.study_instance_uid}/{h.series_instance_uid}/{h.sop_instance_uid}.dcm",
            size_bytes=1000,
            sha256="0" * 64,
            source_ae="BENCH",
            intent_id=None,
        )
        if (n + 1) % 10_000 == 0:
            rate = (n + 1 - args.start) / (time.perf_counter() - started)
            print(f"{n + 1} studies ({rate:.0f}/s)", flush=True)
    print(index.totals())


if __name__ == "__main__":
    main()
