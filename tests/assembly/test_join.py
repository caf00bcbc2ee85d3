"""join_chapter and PauseSettings: pauses by segment end, sample-exact segment offsets."""

from __future__ import annotations

import numpy as np
import pytest

from echo_tts.errors import InvalidInput
from worker.assembly import PauseSettings, Segment, SegmentEnd, join_chapter

RATE = 44_100


def noise(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(0.1, 0.5, n)).astype(np.float32)


def test_offsets_equal_cumulative_sample_counts_including_pauses():
    # Given four segments of odd lengths ending a clause, a sentence, a paragraph and a sentence
    lengths = [10_007, 23_011, 5_003, 17_389]
    ends = [SegmentEnd.CLAUSE, SegmentEnd.SENTENCE, SegmentEnd.PARAGRAPH, SegmentEnd.SENTENCE]
    segments = [Segment(noise(n, i), end) for i, (n, end) in enumerate(zip(lengths, ends, strict=True))]
    pauses = PauseSettings(sentence_s=0.35, paragraph_s=0.8, chapter_s=1.5, clause_s=0.1)
    # When they are joined
    joined = join_chapter(segments, RATE, pauses=pauses)
    # Then each offset is the sum of the lengths and pauses before it, and the chapter pause ends it
    gaps = [round(0.1 * RATE), round(0.35 * RATE), round(0.8 * RATE)]
    expected = [0]
    for n, gap in zip(lengths[:-1], gaps, strict=True):
        expected.append(expected[-1] + n + gap)
    assert joined.offsets == tuple(expected)
    assert joined.samples.size == expected[-1] + lengths[-1] + round(1.5 * RATE)
    assert joined.duration_s == pytest.approx(joined.samples.size / RATE)
    # And every segment sits at its offset, with exact silence in between
    covered = np.zeros(joined.samples.size, dtype=bool)
    for offset, segment in zip(joined.offsets, segments, strict=True):
        assert np.array_equal(joined.samples[offset : offset + segment.samples.size], segment.samples)
        covered[offset : offset + segment.samples.size] = True
    assert not joined.samples[~covered].any()


def test_default_pauses_are_a_sentence_0_35_s_and_a_paragraph_0_8_s():
    # Given the default settings
    pauses = PauseSettings()
    # When / Then
    assert (pauses.sentence_s, pauses.paragraph_s) == (0.35, 0.8)
    joined = join_chapter([Segment(noise(100, 0), SegmentEnd.PARAGRAPH), Segment(noise(100, 1))], RATE)
    assert joined.offsets == (0, 100 + round(0.8 * RATE))


def test_an_empty_segment_adds_no_audio_but_keeps_the_longest_pending_pause():
    # Given a sentence, an empty paragraph end (trimmed to nothing), then another sentence
    segments = [
        Segment(noise(1_000, 0), SegmentEnd.SENTENCE),
        Segment(np.zeros(0, dtype=np.float32), SegmentEnd.PARAGRAPH),
        Segment(noise(2_000, 1), SegmentEnd.SENTENCE),
    ]
    # When they are joined without a chapter pause
    joined = join_chapter(segments, RATE, pauses=PauseSettings(chapter_s=0.0))
    # Then the gap is the paragraph pause, and the empty segment's offset is where the audio stopped
    assert joined.offsets == (0, 1_000, 1_000 + round(0.8 * RATE))
    assert joined.samples.size == 3_000 + round(0.8 * RATE)


def test_a_chapter_of_only_empty_segments_is_empty():
    # Given two empty segments / When joined
    joined = join_chapter([Segment(np.zeros(0, np.float32)), Segment(np.zeros(0, np.float32))], RATE)
    # Then there is no audio and no chapter pause
    assert joined.samples.size == 0 and joined.offsets == (0, 0)


@pytest.mark.parametrize(
    ("field", "value", "range_text"),
    [
        ("sentence_s", -0.1, "0-3 s"),
        ("paragraph_s", 80.0, "0-5 s"),
        ("chapter_s", 11.0, "0-10 s"),
        ("clause_s", 3, "0-2 s"),
    ],
)
def test_out_of_range_pauses_name_the_field_and_its_range(field, value, range_text):
    # Given a pause outside its range / When settings are built / Then the error names both
    with pytest.raises(InvalidInput, match=rf"{field} must be a number within {range_text}, got {value}"):
        PauseSettings(**{field: value})


def test_a_non_number_pause_is_refused():
    # Given a string pause / When settings are built / Then InvalidInput
    with pytest.raises(InvalidInput, match="sentence_s"):
        PauseSettings(sentence_s="0.3")  # type: ignore[arg-type]
