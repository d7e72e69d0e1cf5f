"""Pay the first SR and SC a worker builds while it would otherwise wait for its first chunk.

The first structured report and secondary capture a process builds cost ~1.2 s more than
the next ones (measured on a 2-core AMD EPYC): highdicom parses its IOD module tables
(0.65 s of JSON) the first time it builds any SOP class, matplotlib is imported for the
colormap, Pillow loads its JPEG plugin, and the SR's codes are encoded into
``koa_core.delivery.encoding``'s cache. A night's workers start seconds before their first
chunk is scored (the flow reads headers and checks the manifest meanwhile), so the
delivering flow has each worker build, and throw away, the results of one tiny phantom
film in a background thread as soon as the cluster is up.
"""

from __future__ import annotations

import logging
import threading
from datetime import date

import numpy as np

from koa_core.delivery.capture import build_capture
from koa_core.delivery.encoding import part10_bytes
from koa_core.delivery.findings import Algorithm, FilmFindings, KneeFinding
from koa_core.delivery.report import build_report
from koa_core.imaging.overlay import OverlayKnee, draw_overlay, film_picture
from koa_core.phantom.anatomy import render_knee
from koa_core.phantom.dicom import knee_dataset

log = logging.getLogger(__name__)
_FILM_PX = 64
_BOX = (8, 56, 8, 56)


def warm_up_results(algorithm: Algorithm) -> None:
    """Build and encode, then discard, the SR and SC of a 64 px phantom film."""
    image = render_knee(2, "R", 0, rows=_FILM_PX, columns=_FILM_PX, spacing_mm=2.0)
    header = knee_dataset(
        image, key=("koa-warm-up",), patient_id="KOA-WARM-UP", study_date=date(2000, 1, 1)
    )
    drawn = OverlayKnee("R", _BOX, np.zeros((4, 4), np.float32), 2, 0.5, (2,))
    finding = KneeFinding(
        side="R",
        kl_grade=2,
        probabilities=(0.1, 0.2, 0.4, 0.2, 0.1),
        p_koa=0.7,
        grade_set=(2,),
        refer=False,
        refer_reason=None,
        joint_x=32.0,
        joint_y=32.0,
        roi_mm=60.0,
    )
    overlay = draw_overlay(film_picture(image.pixels), [drawn])
    film = FilmFindings(source=header, knees=(finding,), algorithm=algorithm, overlay=overlay)
    for dataset in (build_report(film), build_capture(film)):
        part10_bytes(dataset)


def start_results_warm_up(algorithm: Algorithm) -> None:
    """Run ``warm_up_results`` in a daemon thread and return at once (for ``Client.run``,
    which calls its function on the worker's event loop)."""
    threading.Thread(
        target=_warm_up_logged, args=(algorithm,), name="koa-results-warm-up", daemon=True
    ).start()


def _warm_up_logged(algorithm: Algorithm) -> None:
    try:
        warm_up_results(algorithm)
    except Exception as error:  # noqa: BLE001 - best effort: the first real film pays instead
        log.warning("results warm-up failed (the first film will pay for it): %s", error)
