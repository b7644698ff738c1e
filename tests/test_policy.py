"""The retention policy: a table test per reason, the Go controller's behaviour kept or changed, properties."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.identifiers import RepositoryId, TagRef
from controller.images import EcrRegistry
from controller.inventory import InUseSnapshot
from controller.policy import (
    PROTECTING,
    Action,
    Image,
    Plan,
    Reason,
    Rules,
    plan,
)
from tests.digests import digest as dg
from tests.profiles import examples

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
REGISTRY = EcrRegistry("123456789012", "us-east-1")
REPO = RepositoryId(REGISTRY, "app")


def img(
    n: int,
    *tags: str,
    age: timedelta | None = None,
    pulled: timedelta | None = None,
    children: tuple[int, ...] = (),
    size: int = 1000,
) -> Image:
    """Image n, pushed n days ago unless told otherwise (higher n = older)."""
    return Image(
        digest=dg(n),
        pushed_at=NOW - (age if age is not None else timedelta(days=n)),
        tags=tags,
        size_bytes=size,
        last_pulled_at=None if pulled is None else NOW - pulled,
        children=tuple(dg(c) for c in children),
    )


def use(*digests: int, tags: tuple[tuple[RepositoryId, str], ...] = ()) -> InUseSnapshot:
    return InUseSnapshot(
        frozenset(dg(d) for d in digests), frozenset(TagRef(r, t) for r, t in tags)
    )


def run(images: list[Image], in_use: InUseSnapshot | None = None, **rules: object) -> Plan:
    return plan(
        images,
        repository=REPO,
        in_use=in_use or use(),
        rules=Rules(**rules),  # type: ignore[arg-type]
        now=NOW,
    )


def outcome(p: Plan) -> dict[int, tuple[str, str]]:
    return {int(d.image.digest[7:], 16): (d.action.value, d.reason.value) for d in p.decisions}


# --------------------------------------------------------------------------------------------
# One table row per reason


@pytest.mark.parametrize(
    ("images", "in_use", "rules", "expected"),
    [
        pytest.param(
            [img(1), img(2), img(3)],
            use(3),
            {"max_images": 2},
            {1: ("keep", "within-count"), 2: ("delete", "over-count"), 3: ("keep", "in-use")},
            id="in-use by digest (status imageID) protects the oldest image",
        ),
        pytest.param(
            [img(1, "v1"), img(2, "v2"), img(3, "v3")],
            use(tags=((REPO, "v3"),)),
            {"max_images": 2},
            {1: ("keep", "within-count"), 2: ("delete", "over-count"), 3: ("keep", "in-use-tag")},
            id="in-use by tag in this repository",
        ),
        pytest.param(
            [img(1, "v1"), img(2, "v2")],
            use(tags=((RepositoryId(REGISTRY, "other"), "v2"),)),
            {"max_images": 1},
            {1: ("keep", "within-count"), 2: ("delete", "over-count")},
            id="the same tag in another repository does not protect",
        ),
        pytest.param(
            [img(1, "v1"), img(2, "v2")],
            use(tags=((RepositoryId(EcrRegistry("210987654321", "us-east-1"), "app"), "v2"),)),
            {"max_images": 1},
            {1: ("keep", "within-count"), 2: ("delete", "over-count")},
            id="the same repository name in another account does not protect",
        ),
        pytest.param(
            [img(1, "v1"), img(2, "v2")],
            use(tags=((RepositoryId(EcrRegistry("123456789012", "eu-west-1"), "app"), "v2"),)),
            {"max_images": 1},
            {1: ("keep", "within-count"), 2: ("delete", "over-count")},
            id="the same repository name in another region does not protect",
        ),
        pytest.param(
            [img(1), img(2, "latest"), img(3)],
            use(),
            {"max_images": 1},
            {1: ("delete", "over-count"), 2: ("keep", "keep-tag"), 3: ("delete", "over-count")},
            id="keep tag latest (default)",
        ),
        pytest.param(
            [img(1), img(2, "stable", "build-2"), img(3, "latest")],
            use(),
            {"max_images": 1, "keep_tags": frozenset({"stable"})},
            {1: ("delete", "over-count"), 2: ("keep", "keep-tag"), 3: ("delete", "over-count")},
            id="custom keep tags replace latest",
        ),
        pytest.param(
            [img(1, "build-1"), img(2, "v2-release-x"), img(3, "build-3")],
            use(),
            {"max_images": 2, "keep_filters": (re.compile("release"),)},
            {
                1: ("keep", "within-count"),
                2: ("keep", "keep-regex"),
                3: ("delete", "over-count"),
            },
            id="keep filter is an unanchored search, as in Go",
        ),
        pytest.param(
            [img(1), img(2), img(3)],
            use(),
            {"max_images": 1, "keep_younger_than": timedelta(days=2, hours=1)},
            {1: ("keep", "young"), 2: ("keep", "young"), 3: ("delete", "over-count")},
            id="young images are kept even over the count",
        ),
        pytest.param(
            [img(1), img(2, pulled=timedelta(hours=5)), img(3, pulled=timedelta(days=40))],
            use(),
            {"max_images": 2, "keep_pulled_within": timedelta(days=30)},
            {
                1: ("keep", "within-count"),
                2: ("keep", "recently-pulled"),
                3: ("delete", "over-count"),
            },
            id="recently pulled kept; pulled long ago and never pulled are not",
        ),
        pytest.param(
            [img(1), img(2, "latest", children=(3, 4)), img(3), img(4), img(5)],
            use(),
            {"max_images": 1},
            {
                1: ("delete", "over-count"),
                2: ("keep", "keep-tag"),
                3: ("keep", "index-child"),
                4: ("keep", "index-child"),
                5: ("delete", "over-count"),
            },
            id="a kept index keeps its children",
        ),
        pytest.param(
            [img(1, children=(2, 3)), img(2), img(3), img(4)],
            use(3),
            {"max_images": 1},
            {
                1: ("keep", "index-parent"),
                2: ("keep", "index-child"),
                3: ("keep", "in-use"),
                4: ("delete", "over-count"),
            },
            id="a protected child keeps its index and siblings",
        ),
        pytest.param(
            [img(1), img(5, children=(6, 7)), img(6), img(7)],
            use(),
            {"max_images": 1},
            {
                1: ("keep", "within-count"),
                5: ("delete", "over-count"),
                6: ("delete", "child-of-deleted-index"),
                7: ("delete", "child-of-deleted-index"),
            },
            id="an index goes with the children only it referenced",
        ),
        pytest.param(
            [img(1, "latest", children=(3,)), img(2, children=(3, 4)), img(3), img(4), img(5)],
            use(),
            {"max_images": 1},
            {
                1: ("keep", "keep-tag"),
                2: ("keep", "index-parent"),
                3: ("keep", "index-child"),
                4: ("keep", "index-child"),
                5: ("delete", "over-count"),
            },
            id="a child shared with a kept index keeps the other index too",
        ),
        pytest.param(
            [img(1), img(2), img(3), img(4), img(5)],
            use(4, 5),
            {"max_images": 3},
            {
                1: ("keep", "within-count"),
                2: ("delete", "over-count"),
                3: ("delete", "over-count"),
                4: ("keep", "in-use"),
                5: ("keep", "in-use"),
            },
            id="protected images count toward max-images",
        ),
        pytest.param(
            [img(1), img(2), img(3)],
            use(1, 2, 3),
            {"max_images": 1},
            {1: ("keep", "in-use"), 2: ("keep", "in-use"), 3: ("keep", "in-use")},
            id="protected images alone over the limit: nothing is deleted",
        ),
        pytest.param(
            [img(1), img(2), img(3), img(4), img(5)],
            use(),
            {"max_images": 1, "max_deletions_per_cycle": 2},
            {
                1: ("keep", "within-count"),
                2: ("keep", "deletion-cap"),
                3: ("keep", "deletion-cap"),
                4: ("delete", "over-count"),
                5: ("delete", "over-count"),
            },
            id="the deletion cap stops at the oldest N",
        ),
        pytest.param(
            [img(1), img(2), img(3, children=(4, 5)), img(4), img(5), img(6)],
            use(),
            {"max_images": 1, "max_deletions_per_cycle": 2},
            {
                1: ("keep", "within-count"),
                2: ("keep", "deletion-cap"),
                3: ("keep", "deletion-cap"),
                4: ("keep", "deletion-cap"),
                5: ("keep", "deletion-cap"),
                6: ("delete", "over-count"),
            },
            id="the cap never skips an old group that does not fit to delete a younger one",
        ),
        pytest.param(
            [img(1), img(2)],
            use(),
            {"max_images": 5},
            {1: ("keep", "within-count"), 2: ("keep", "within-count")},
            id="under the limit: nothing to do",
        ),
    ],
)
def test_reasons(
    images: list[Image],
    in_use: InUseSnapshot,
    rules: dict[str, object],
    expected: dict[int, tuple[str, str]],
) -> None:
    assert outcome(run(images, in_use, **rules)) == expected


def test_order_is_newest_first_with_digest_tie_break() -> None:
    same = timedelta(days=3)
    images = [img(9, age=same), img(1), img(4, age=same), img(2)]
    p = run(images, max_images=2)
    assert [int(d.image.digest[7:], 16) for d in p.decisions] == [1, 2, 9, 4]
    # the older of the tied pair by tie-break (smaller digest) goes first
    assert [d.image.digest for d in p.deletions] == [dg(9), dg(4)]
    assert p.delete_waves == ((dg(4), dg(9)),)


def test_delete_waves_put_indexes_before_their_children() -> None:
    images = [img(1), img(2, children=(3, 4)), img(3), img(4), img(5)]
    p = run(images, max_images=1, keep_tags=frozenset())
    assert p.delete_waves == ((dg(5), dg(2)), (dg(4), dg(3)))


def test_counts() -> None:
    p = run([img(1, size=10), img(2, "latest", size=20), img(3, size=30)], max_images=1)
    # max-images 1 and `latest` protected: both unprotected images go
    assert p.count_by_reason() == {Reason.KEEP_TAG: 1, Reason.OVER_COUNT: 2}


def test_the_plan_names_the_groups_of_its_linked_deletions() -> None:
    # 2 and 6 are indexes; 4 is shared by both, so 2, 3, 4, 6 and 7 form one group
    images = [img(1), img(2, children=(3, 4)), img(3), img(4), img(5), img(6, children=(4, 7))]
    images.append(img(7))
    p = run(images, max_images=0, keep_tags=frozenset())
    whole = frozenset(dg(n) for n in (2, 3, 4, 6, 7))
    assert {d.image.digest for d in p.deletions} == whole | {dg(1), dg(5)}
    assert p.groups == {digest: whole for digest in whole}  # 1 and 5 stand alone: not in it
    # no index: no groups (the single-wave fast path)
    assert run([img(1), img(2), img(3)], max_images=1).groups == {}


def test_duplicate_listing_entries_count_once() -> None:
    p = run([img(1), img(1), img(2)], max_images=2)
    assert len(p.decisions) == 2
    assert p.deletions == ()


def test_empty_repository() -> None:
    assert run([], max_images=1) == Plan((), ())


# --------------------------------------------------------------------------------------------
# The Go controller's behaviour: kept, or changed on purpose (each change is in the README)


def test_go_kept_oldest_unprotected_go_first_and_in_use_tags_protect() -> None:
    images = [img(n, f"build-{n}") for n in range(1, 7)]
    p = run(images, use(tags=((REPO, "build-6"),)), max_images=3)
    assert [d.image.digest for d in p.deletions] == [dg(3), dg(4), dg(5)]


def test_go_changed_no_cap_of_100_deletions_per_cycle() -> None:
    # Go deleted at most 100 images per repository per cycle; we reach the target in one cycle.
    p = run([img(n) for n in range(1, 1001)], max_images=10)
    assert len(p.deletions) == 990
    assert [len(w) for w in p.delete_waves] == [990]


def test_go_changed_latest_counts_toward_max_images() -> None:
    # Go left `latest` out of the count and so kept max-images + 1; we keep max-images.
    images = [img(1), img(2), img(3), img(4), img(5, "latest")]
    p = run(images, max_images=3)
    assert len(p.decisions) - len(p.deletions) == 3
    assert [d.image.digest for d in p.deletions] == [dg(3), dg(4)]


def test_go_changed_tag_matching_is_per_repository() -> None:
    # Go protected a tag name in every repository; only this repository's tag protects here.
    other = RepositoryId(REGISTRY, "worker")
    p = run([img(1, "v1"), img(2, "v2")], use(tags=((other, "v2"),)), max_images=1)
    assert [d.image.digest for d in p.deletions] == [dg(2)]


def test_go_changed_digest_protects_even_with_a_moved_tag() -> None:
    # The pod started on v1's old image; the tag v1 now points to a new image. Go matched the
    # tag name and deleted the old image out from under the pod; we protect the running digest.
    images = [img(1, "v1"), img(2), img(3)]
    p = run(images, use(3, tags=((REPO, "v1"),)), max_images=1)
    assert outcome(p)[3] == ("keep", "in-use")
    assert outcome(p)[1] == ("keep", "in-use-tag")
    assert [d.image.digest for d in p.deletions] == [dg(2)]


# --------------------------------------------------------------------------------------------
# Properties


@st.composite
def repositories(draw: st.DrawFn) -> tuple[list[Image], InUseSnapshot, Rules]:
    count = draw(st.integers(0, 40))
    tag_pool = ["latest", "stable", "v1", "v2", "release-1", "dev"]
    images: list[Image] = []
    for n in range(count):
        tags = tuple(sorted(set(draw(st.lists(st.sampled_from(tag_pool), max_size=2)))))
        pulled = draw(st.none() | st.integers(0, 90).map(lambda d: timedelta(days=d)))
        age = timedelta(hours=draw(st.integers(0, 24 * 60)))
        images.append(img(n, *tags, age=age, pulled=pulled))
    # some of them become indexes over a few of the others
    for n in range(count):
        if draw(st.integers(0, 9)) == 0 and count > 1:
            kids = [k for k in draw(st.lists(st.integers(0, count - 1), max_size=3)) if k != n]
            # no cycles: an index only references images that are not indexes themselves
            kids = [k for k in kids if not images[k].children]
            images[n] = Image(
                digest=images[n].digest,
                pushed_at=images[n].pushed_at,
                tags=images[n].tags,
                size_bytes=images[n].size_bytes,
                last_pulled_at=images[n].last_pulled_at,
                children=tuple(dg(k) for k in sorted(set(kids))),
            )
    in_use_digests = draw(st.sets(st.integers(0, max(count, 1)), max_size=5))
    in_use_tags = draw(st.sets(st.sampled_from(tag_pool), max_size=2))
    in_use = use(*in_use_digests, tags=tuple((REPO, t) for t in in_use_tags))
    rules = Rules(
        max_images=draw(st.integers(1, 30)),
        keep_tags=frozenset(draw(st.sets(st.sampled_from(tag_pool), max_size=2))),
        keep_filters=tuple(
            re.compile(p) for p in draw(st.sets(st.sampled_from(["^release", "2$"]), max_size=1))
        ),
        keep_younger_than=draw(st.none() | st.sampled_from([timedelta(days=1), timedelta(days=7)])),
        keep_pulled_within=draw(st.none() | st.sampled_from([timedelta(days=30)])),
    )
    return images, in_use, rules


def _plan(images: list[Image], in_use: InUseSnapshot, rules: Rules) -> Plan:
    return plan(images, repository=REPO, in_use=in_use, rules=rules, now=NOW)


@settings(max_examples=examples(300))
@given(repositories())
def test_property_no_protected_image_is_ever_deleted(
    case: tuple[list[Image], InUseSnapshot, Rules],
) -> None:
    images, in_use, rules = case
    p = _plan(images, in_use, rules)
    doomed = {d.image.digest for d in p.deletions}
    for image in images:
        if in_use.digest_in_use(image.digest):
            assert image.digest not in doomed
        if any(in_use.tag_in_use(REPO, t) for t in image.tags):
            assert image.digest not in doomed
        if set(image.tags) & rules.keep_tags:
            assert image.digest not in doomed
        if any(f.search(t) for f in rules.keep_filters for t in image.tags):
            assert image.digest not in doomed
        if rules.keep_younger_than and NOW - image.pushed_at < rules.keep_younger_than:
            assert image.digest not in doomed
        # ECR's own invariant: a kept index never loses a child, a protected child its index
        if image.digest not in doomed:
            assert not (set(image.children) & doomed)
    for decision in p.decisions:
        assert (decision.reason in PROTECTING) <= (decision.action is Action.KEEP)


@settings(max_examples=examples(300))
@given(repositories())
def test_property_repository_ends_within_max_images_unless_protected_exceed(
    case: tuple[list[Image], InUseSnapshot, Rules],
) -> None:
    images, in_use, rules = case
    p = _plan(images, in_use, rules)
    remaining = len(p.decisions) - len(p.deletions)
    protected = sum(1 for d in p.decisions if d.protected)
    assert remaining <= max(rules.max_images, protected)
    # and nothing is deleted needlessly: without the last deleted group it would not fit
    if p.deletions:
        assert len(p.decisions) > rules.max_images


@settings(max_examples=examples(200))
@given(repositories(), st.randoms(use_true_random=False))
def test_property_plan_does_not_depend_on_input_order(
    case: tuple[list[Image], InUseSnapshot, Rules], rnd: random.Random
) -> None:
    images, in_use, rules = case
    shuffled = list(images)
    rnd.shuffle(shuffled)
    assert _plan(shuffled, in_use, rules) == _plan(images, in_use, rules)


@settings(max_examples=examples(200))
@given(repositories())
def test_property_waves_never_put_a_child_with_or_before_its_index(
    case: tuple[list[Image], InUseSnapshot, Rules],
) -> None:
    images, in_use, rules = case
    p = _plan(images, in_use, rules)
    wave_of = {d: i for i, wave in enumerate(p.delete_waves) for d in wave}
    assert set(wave_of) == {d.image.digest for d in p.deletions}
    # a group goes whole: its members are deletions, each linked member maps to the same group
    for digest, group in p.groups.items():
        assert digest in group
        assert group <= set(wave_of)
        assert all(p.groups[member] == group for member in group)
    for image in images:
        for child in image.children:
            if image.digest in wave_of and child in wave_of:
                assert p.groups[image.digest] == p.groups[child]
    for image in images:
        for child in image.children:
            if image.digest in wave_of and child in wave_of:
                assert wave_of[child] > wave_of[image.digest]
