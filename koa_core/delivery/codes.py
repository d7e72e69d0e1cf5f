"""koa's private DICOM coding scheme ``99KOA``: Kellgren-Lawrence grades and koa's outputs.

No standard terminology (SNOMED CT, LOINC, DICOM DCM) codes the Kellgren-Lawrence grades
or a conformal prediction set, so koa defines a private scheme. DICOM PS3.16 section 8.2
reserves designators beginning with ``99`` for private schemes; every SR koa writes names
it in (0008,0110) CodingSchemeIdentificationSequence.

=============  =====================================================  ====================
Code value     Code meaning                                           Used as
=============  =====================================================  ====================
``KLGRADE``    Kellgren-Lawrence grade                                concept name (CODE)
``KL0``        KL 0: no radiographic features of osteoarthritis       value
``KL1``        KL 1: doubtful joint space narrowing, possible lipping value
``KL2``        KL 2: definite osteophytes, possible narrowing         value
``KL3``        KL 3: moderate osteophytes, definite narrowing         value
``KL4``        KL 4: large osteophytes, marked narrowing, sclerosis   value
``GRADESET``   KL grade in the prediction set                         concept name (CODE),
                                                                      one item per grade
``REFER``      Refer to a human reader                                concept name; value
                                                                      SCT Yes / SCT No
``REFERWHY``   Reason for referral                                    concept name (TEXT)
``PKOA``       Probability of radiographic knee OA (KL >= 2)          measurement name
``PKL0``-4     Probability of KL grade n                              measurement name
=============  =====================================================  ====================

Probabilities carry the UCUM unit ``{probability}`` (a dimensionless ratio, 0-1).
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from koa_core.schema import GRADES, KOA_MIN_GRADE

SCHEME = "99KOA"
SCHEME_NAME = "koa Kellgren-Lawrence and result codes"
SCHEME_VERSION = "1"
_KL_MEANINGS = (
    "KL 0: no radiographic features of osteoarthritis",
    "KL 1: doubtful joint space narrowing, possible lipping",
    "KL 2: definite osteophytes, possible narrowing",
    "KL 3: moderate osteophytes, definite narrowing",
    "KL 4: large osteophytes, marked narrowing, sclerosis",
)

KL_GRADE = Code("KLGRADE", SCHEME, "Kellgren-Lawrence grade")
GRADE_IN_SET = Code("GRADESET", SCHEME, "KL grade in the prediction set")
REFER = Code("REFER", SCHEME, "Refer to a human reader")
REFER_REASON = Code("REFERWHY", SCHEME, "Reason for referral")
P_KOA = Code("PKOA", SCHEME, f"Probability of radiographic knee OA (KL >= {KOA_MIN_GRADE})")
KL_CODES: tuple[Code, ...] = tuple(
    Code(f"KL{grade}", SCHEME, meaning) for grade, meaning in zip(GRADES, _KL_MEANINGS, strict=True)
)
P_KL_CODES: tuple[Code, ...] = tuple(
    Code(f"PKL{grade}", SCHEME, f"Probability of KL grade {grade}") for grade in GRADES
)
PROBABILITY_UNIT = Code("{probability}", "UCUM", "probability")
YES, NO = codes.SCT.Yes, codes.SCT.No
KNEE_JOINT = codes.SCT.KneeJoint  # SCT 49076000 "Knee joint"
LATERALITY = {"R": codes.SCT.Right, "L": codes.SCT.Left}  # SCT 24028007 / 7771000


def grade_of(value: str) -> int:
    """The KL grade a ``KL<n>`` code value names."""
    return [code.value for code in KL_CODES].index(value)


def scheme_identification() -> Dataset:
    """One item of (0008,0110) CodingSchemeIdentificationSequence describing ``99KOA``."""
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = SCHEME_NAME
    item.CodingSchemeVersion = SCHEME_VERSION
    item.CodingSchemeResponsibleOrganization = "koa"
    return item


def codes_markdown() -> str:
    """The ``99KOA`` codes as a Markdown table (for the README)."""
    rows = [KL_GRADE, *KL_CODES, GRADE_IN_SET, REFER, REFER_REASON, P_KOA, *P_KL_CODES]
    lines = ["| scheme | code | meaning |", "|---|---|---|"]
    lines += [f"| `{SCHEME}` | `{code.value}` | {code.meaning} |" for code in rows]
    return "\n".join(lines)
