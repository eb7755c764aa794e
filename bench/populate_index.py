"""Grow an archive's index with synthetic studies, for query benchmarks at scale.

Rows go straight into the index through ``SqlIndex.record_instance`` (no object
files), one instance per study, with Vietnamese and Western names, dates over
ten years and a mix of modalities — enough to measure C-FIND, QIDO and worklist
searches against 100 000 studies without sending 100 000 files.

    python bench/populate_index.py --data-dir /tmp/bigpacs --studies 100000
    python bench/populate_index.py --database-url postgresql+psycopg://... --studies 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from pathlib import Path

from pacs.config import load_settings
from pacs.dicomfile import InstanceHeader
from pacs.storage.database import ensure_schema, make_engine
from pacs.storage.index import SqlIndex

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/pacs-bench-index"))
    parser.add_argument("--database-url", default="")
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--start", type=int, default=0, help="first study number (to grow further)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir, database_url=args.database_url or None)
    engine = make_engine(settings.effective_database_url, sqlite_synchronous="NORMAL")
    ensure_schema(engine, auto_migrate=True)
    index = SqlIndex(engine)
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
