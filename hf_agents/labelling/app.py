"""The designers' labelling app: a Gradio page (pairs side by side, or up to 5 videos ranked) over one
trajectory dataset, a small JSON API beside it, and the episode videos, on one FastAPI server.

Safe by default: it binds 127.0.0.1 and answers only requests addressed to that name (no DNS rebinding);
another address needs an access token; it takes no uploads; it serves only the videos of its own dataset (a route
that takes an episode id, never a path); labels for unknown episodes are refused.
"""


import hmac
import html
import itertools
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel

from hf_agents.data import load_trajectories
from hf_agents.data.labels import LabelError, LabelStore, agreement, check_labeller
from hf_agents.labelling.choose import PairChooser
from hf_agents.labelling.videos import EpisodeVideos
from hf_agents.locations import fingerprint

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a closed network
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
LETTERS = "ABCDE"
CHOICES = {"left": [1.0, 0.0], "right": [0.0, 1.0], "tie": [0.0, 0.0], "skip": None}
SAID = {"left": "A is better", "right": "B is better", "tie": "a tie", "skip": "skipped"}
TOKEN_COOKIE = "hf_agents_label_token"
NO_UPLOADS = re.compile(r"(/gradio_api)?/(upload|upload_progress|process_recording|stream)(/.*)?")
SPEEDS = (0.25, 0.5, 1, 1.5, 2, 4)

HEAD = """
<script>
// Keys act only on the visible tab; each tab's hint lists its keys.
const HFA_PAIR_KEYS = {a: 'label-left', arrowleft: 'label-left', d: 'label-right', arrowright: 'label-right',
                       s: 'label-tie', arrowdown: 'label-tie', w: 'label-skip', arrowup: 'label-skip'};
const hfaShown = (el) => !!el && el.offsetParent !== null;
function hfaClick(id) {
  const button = document.getElementById(id);
  if (!hfaShown(button)) return false;
  button.click();
  return true;
}
// Ranking keys: A-E pick a video, a digit gives it that level (0 = 10) and moves on, Enter submits.
let hfaCursor = 0, hfaRankKey = '';
function hfaSlots() {
  return [...document.querySelectorAll('#rank-view .hfa-slot')].filter((s) => hfaShown(s) && s.querySelector('video'));
}
function hfaMark() {
  const slots = hfaSlots(), key = slots.map((s) => s.querySelector('video').dataset.episode).join(',');
  if (key !== hfaRankKey) { hfaRankKey = key; hfaCursor = 0; }
  document.querySelectorAll('#rank-view .hfa-slot').forEach((s) => s.classList.remove('hfa-current'));
  if (slots[hfaCursor]) slots[hfaCursor].classList.add('hfa-current');
  return slots;
}
function hfaRank(key) {
  if (!hfaShown(document.getElementById('rank-view'))) return false;
  const slots = hfaMark();
  if (!slots.length) return false;
  if (key.length === 1 && 'abcde'.includes(key) && 'abcde'.indexOf(key) < slots.length) {
    hfaCursor = 'abcde'.indexOf(key);
  } else if (/^[0-9]$/.test(key)) {
    const level = key === '0' ? '10' : key;
    const option = [...slots[hfaCursor].querySelectorAll('label')].find((l) => l.innerText.trim() === level);
    const input = option && option.querySelector('input');
    if (!input) return false;
    input.click();
    hfaCursor = Math.min(hfaCursor + 1, slots.length - 1);
  } else if (key === 'backspace') {
    hfaCursor = Math.max(hfaCursor - 1, 0);
  } else if (key === 'enter') {
    return hfaClick('rank-submit');
  } else {
    return false;
  }
  hfaMark();
  return true;
}
document.addEventListener('keydown', (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.target.closest && ev.target.closest('input:not([type=radio]), textarea, select')) return;
  const key = ev.key.toLowerCase();
  let used = false;
  if (key === 'u') used = hfaClick('label-undo');
  else if (key === 'r') used = hfaReplayVisible();
  else if (HFA_PAIR_KEYS[key]) used = hfaClick(HFA_PAIR_KEYS[key]);
  if (!used) used = hfaRank(key);
  if (used) ev.preventDefault();
});
// The videos of one comparison play in sync: they start together once all can play, restart together when the
// last has ended, and follow each other's pause, play, scrubbing and speed.
const hfaGroup = (el) => el.closest && el.closest('.hfa-group');
const hfaVideos = (group) => [...group.querySelectorAll('video')];
function hfaRate() { return parseFloat(localStorage.getItem('hfa-speed') || '1'); }
function hfaSpeed(v, rate) {  // the default too: loading a new video resets its speed to the default
  v.defaultPlaybackRate = rate;
  if (v.playbackRate !== rate) v.playbackRate = rate;
}
function hfaSeek(v, t) {  // a seek of ours, which the others must not follow back
  const to = Math.min(t, v.duration || t);
  v.dataset.hfaSeekTo = to;
  v.currentTime = to;
}
function hfaRestart(group) {
  hfaVideos(group).forEach((v) => { hfaSeek(v, 0); hfaSpeed(v, hfaRate()); v.play().catch(() => {}); });
}
function hfaReplayVisible() {
  const groups = [...document.querySelectorAll('.hfa-group')].filter((g) => hfaShown(g) && g.querySelector('video'));
  groups.forEach(hfaRestart);
  return groups.length > 0;
}
function hfaOthers(ev) {
  const group = hfaGroup(ev.target);
  return group ? hfaVideos(group).filter((v) => v !== ev.target) : [];
}
document.addEventListener('canplaythrough', (ev) => {
  const group = hfaGroup(ev.target);
  if (!group) return;
  const videos = hfaVideos(group), key = videos.map((v) => v.src).join(' ');
  if (group.dataset.started === key || !videos.every((v) => v.readyState >= 3)) return;
  group.dataset.started = key;
  hfaRestart(group);
  hfaMark();
}, true);
document.addEventListener('ended', (ev) => {
  const group = hfaGroup(ev.target);
  if (group && hfaVideos(group).every((v) => v.ended)) hfaRestart(group);
}, true);
document.addEventListener('seeked', (ev) => {
  const ours = ev.target.dataset.hfaSeekTo;
  delete ev.target.dataset.hfaSeekTo;
  if (ours !== undefined && Math.abs(ev.target.currentTime - Number(ours)) < 0.05) return;
  hfaOthers(ev).forEach((v) => {
    hfaSeek(v, ev.target.currentTime);
    if (!ev.target.paused && v.paused) v.play().catch(() => {});
  });
}, true);
document.addEventListener('pause', (ev) => {
  if (!ev.target.ended) hfaOthers(ev).forEach((v) => { if (!v.paused) v.pause(); });
}, true);
document.addEventListener('play', (ev) => {
  hfaSpeed(ev.target, hfaRate());
  hfaOthers(ev).forEach((v) => { if (v.paused && !v.ended) v.play().catch(() => {}); });
}, true);
document.addEventListener('ratechange', (ev) => {  // the video's own menu or the Speed choice
  if (ev.target.readyState === 0) return;  // a video loading, back at its default speed
  const rate = ev.target.playbackRate;
  localStorage.setItem('hfa-speed', String(rate));
  const choice = document.getElementById('hfa-speed');
  if (choice && parseFloat(choice.value) !== rate) choice.value = String(rate);
  hfaOthers(ev).forEach((v) => hfaSpeed(v, rate));
}, true);
document.addEventListener('change', (ev) => {
  if (ev.target.id !== 'hfa-speed') return;
  localStorage.setItem('hfa-speed', ev.target.value);
  document.querySelectorAll('.hfa-group video').forEach((v) => hfaSpeed(v, parseFloat(ev.target.value)));
});
</script>
"""
CSS = """
.hfa-group { display: flex; gap: 12px; flex-wrap: wrap; justify-content: center; }
.hfa-slot { align-items: center; flex-grow: 0 !important; }
.hfa-group figure { margin: 0; text-align: center; }
.hfa-group video { width: 256px; height: 256px; image-rendering: pixelated; background: #000; }
#rank-view video { width: 176px; height: 176px; }
.hfa-group figcaption { font-weight: bold; font-size: 1.2em; }
.hfa-group figcaption small { font-weight: normal; font-size: 0.75em; opacity: 0.8; }
.hfa-current { outline: 3px solid #f97316; border-radius: 6px; }
#status { min-height: 1.5em; }
.hfa-center { justify-content: center; }
"""
PAIR_KEYS = ("Keys: **A** / **←** A is better · **D** / **→** B is better · **S** / **↓** tie · **W** / **↑** skip · "
             "**U** undo · **R** replay")
RANK_KEYS = ("Keys: **A**–**E** pick a video · **1**–**{top}** give it that level and move on · **Enter** submit · "
             "**U** undo · **R** replay")


class LabelIn(BaseModel):
    """A label posted to /api/labels (scores: higher is better; none = skipped)."""

    labeller: str
    kind: str = "pair"
    episodes: list[int]
    scores: list[float] | None = None


class UndoIn(BaseModel):
    """An undo posted to /api/undo: the labeller's latest label on this dataset."""

    labeller: str


@dataclass
class LabelSession:
    """What one open page is showing."""

    labeller: str
    pair: tuple[int, int] | None = None
    ranking: list[int] | None = None


class LabellingApp:
    """Dataset + store + chooser + videos; the page and the API both call `submit`, `undo` and `next_*`."""

    def __init__(self, trajectories: str, db: str, labeller: str, target: int = 100, levels: int = 5,
                 reward_model: str | None = None, videos: str | None = None, seed: int = 0):
        labeller = check_labeller(labeller)
        if not 2 <= levels <= 10 or target < 1:
            raise ValueError(f"--levels {levels} / --target {target}: give 2 to 10 levels and a target of at least 1")
        self.trajectories_path = str(Path(trajectories).resolve())
        self.trajectories = load_trajectories(trajectories)
        ids = [int(m["episode_id"]) for m in self.trajectories.episodes]
        if len(ids) < 2:
            raise ValueError(f"{trajectories}: {len(ids)} episode(s); labelling needs at least 2 to compare")
        key = fingerprint(self.trajectories_path)
        self.store = LabelStore(db, key, self.trajectories_path, ids)
        rewards = reward_model_scores(reward_model, self.trajectories) if reward_model else None
        self.chooser = PairChooser(ids, rewards, seed)
        folder = videos or Path(db).with_name(Path(db).stem + "-videos") / key[:16]
        self.videos = EpisodeVideos(self.trajectories, folder)
        self.labeller, self.target, self.levels = labeller, target, levels

    def next_pair(self, labeller: str):
        return self.chooser.pair(self.store.answered(labeller))

    def next_ranking(self, labeller: str):
        return self.chooser.ranking(self.store.answered(labeller))

    def submit(self, labeller: str, kind: str, episodes, scores) -> int:
        return self.store.add(labeller, kind, episodes, scores)

    def undo(self, labeller: str) -> dict | None:
        return self.store.undo(labeller)

    def progress(self, labeller: str) -> dict:
        """Labels given; the target, capped at what can still be asked; done when no pair is left."""
        labelled, left = self.store.count(labeller), self.chooser.pairs_left(self.store.answered(labeller))
        target = min(self.target, labelled + left)
        return {"labeller": labeller, "labelled": labelled, "target": target, "target_asked": self.target,
                "pairs_left": left, "pairs_total": self.chooser.pairs_total, "done": left == 0,
                "target_reached": labelled >= target, "all_labellers": self.store.count(),
                "next": self.next_steps(labeller) if labelled >= target else []}

    def next_steps(self, labeller: str) -> list[str]:
        """The commands that turn this labeller's labels into their reward model."""
        prefs, q = f"prefs-{labeller}.parquet", shlex.quote
        return [f"hf-agents label export {q(str(self.store.path))} --labeller {q(labeller)} --out {q(prefs)}",
                f"hf-agents train reward.yaml trajectories={q(self.trajectories_path)} preferences={q(prefs)} "
                f"labeller={q(labeller)} output_dir={q('reward-' + labeller)}"]

    def agreement(self, labeller: str) -> dict | None:
        """How often this labeller agrees with the others on the pairs they both judged (None: none shared)."""
        return agreement(self.store.labels())["by_labeller"].get(labeller)


def reward_model_scores(reward_model: str, trajectories) -> dict[int, float]:
    """Each episode's reward under a trained reward model (to pick the pairs it is least sure about)."""
    import torch

    from hf_agents.models import TrajectoryRewardModel

    model = TrajectoryRewardModel.load_trained(reward_model, trajectories.frame_size[0])
    with torch.no_grad():
        rewards = model(embeddings=model.embed_dataset(trajectories)).logits[:, 0].tolist()
    return {int(m["episode_id"]): r for m, r in zip(trajectories.episodes, rewards)}


# -- the page ------------------------------------------------------------------------------------------
def video_html(app: LabellingApp, episode: int, k: int) -> str:
    """One episode's video, captioned with its letter and length, with the browser's own controls."""
    caption = f"{LETTERS[k]} <small>{app.videos.steps(episode)} steps · {app.videos.seconds(episode):.1f} s</small>"
    return (f"<figure><figcaption>{caption}</figcaption><video src='/videos/{episode}.webm' controls muted "
            f"playsinline preload='auto' data-episode='{episode}'></video></figure>")


def speed_html() -> str:
    options = "".join(f"<option value='{s}'{' selected' if s == 1 else ''}>{s}×</option>" for s in SPEEDS)
    return f"<label class='hfa-speed'>Speed <select id='hfa-speed'>{options}</select></label>"


def progress_text(p: dict, agreed: dict | None = None) -> str:
    text = (f"**{html.escape(p['labeller'])}**: <span id='labelled-count'>{p['labelled']}</span> of "
            f"<span id='target'>{p['target']}</span> labelled · {p['pairs_left']} of {p['pairs_total']} pairs left "
            f"to ask · {p['all_labellers']} labels by everyone on this dataset")
    if agreed:
        text += (f" · agreement with the other designers: <span id='agreement'>{agreed['agreement']:.0%}</span> "
                 f"of {agreed['compared']} shared judgements")
    return text


def done_text(p: dict) -> str:
    """What to do next, once every pair is labelled or the target is reached ('' before)."""
    if not p["next"]:
        return ""
    if p["done"]:
        head = (f"### All labelled\nEvery one of the {p['pairs_total']} pairs has a label from "
                f"**{html.escape(p['labeller'])}** ({p['labelled']} labels); nothing is left to ask.")
    else:
        head = (f"### Target reached\n{p['labelled']} labels; {p['pairs_left']} pairs are left if you want to go on.")
    commands = "\n".join(p["next"])
    return f"{head} Next, export the labels and train the reward model:\n```bash\n{commands}\n```"


def ranking_note(episodes, levels) -> str:
    strict = sum(a != b for a, b in itertools.combinations(levels, 2))
    ties = len(episodes) * (len(episodes) - 1) // 2 - strict
    return (f"✓ Saved your ranking of {len(episodes)} videos: {strict} comparisons"
            + (f", {ties} tie(s)" if ties else "") + ". Here is the next set.")


def build_page(app: LabellingApp):
    import gradio as gr

    levels = [str(k) for k in range(1, app.levels + 1)]
    with gr.Blocks(title="hf-agents: label agent videos") as page:
        gr.Markdown("## Which run plays the way you want?\nVideos play together; pause, scrub or change the speed "
                    "of one and the others follow.")
        progress = gr.Markdown(elem_id="progress")
        with gr.Row(equal_height=True):
            status = gr.Markdown(elem_id="status")
            gr.HTML(speed_html())
            undo = gr.Button("↶ Undo my last label", elem_id="label-undo", size="sm", scale=0)
        done = gr.Markdown(elem_id="done")
        session = gr.State()
        with gr.Tabs():
            with gr.Tab("Compare two", id="pairs") as pairs_tab:
                gr.Markdown(PAIR_KEYS, elem_id="pair-keys")
                pair_videos, buttons = [], {}
                with gr.Row(elem_id="pair-view", elem_classes="hfa-group"):
                    for choice, text in (("left", "◀ A is better"), ("right", "B is better ▶")):
                        with gr.Column(elem_classes="hfa-slot", min_width=260):
                            pair_videos.append(gr.HTML())
                            buttons[choice] = gr.Button(text, elem_id=f"label-{choice}", variant="primary")
                with gr.Row(elem_classes="hfa-center"):
                    for choice, text in (("tie", "Tie"), ("skip", "Skip")):
                        buttons[choice] = gr.Button(text, elem_id=f"label-{choice}", variant="secondary", scale=0,
                                                    min_width=160)
            with gr.Tab("Rank several", id="ranking") as ranking_tab:
                gr.Markdown(f"Give each video a level from 1 (worst) to {app.levels} (best); equal levels are "
                            f"ties.\n\n{RANK_KEYS.format(top=app.levels)}", elem_id="rank-keys")
                slots, rank_videos, radios = [], [], []
                with gr.Row(elem_id="rank-view", elem_classes="hfa-group"):
                    for letter in LETTERS:
                        with gr.Column(elem_classes="hfa-slot", min_width=180) as slot:
                            slots.append(slot)
                            rank_videos.append(gr.HTML())
                            radios.append(gr.Radio(levels, label=f"{letter}: level", elem_id=f"rank-{letter}"))
                rank_submit = gr.Button("Submit ranking", elem_id="rank-submit", variant="primary")

        pair_parts, rank_parts = [*pair_videos, *buttons.values()], [*slots, *rank_videos, *radios, rank_submit]
        outputs = [session, progress, status, done, *pair_parts, *rank_parts]

        def show_pair(s: LabelSession) -> list:
            videos = [video_html(app, e, k) for k, e in enumerate(s.pair)] if s.pair else ["", ""]
            return [*videos, *[gr.update(visible=s.pair is not None)] * len(buttons)]

        def show_ranking(s: LabelSession) -> list:
            r = s.ranking or []
            return [*[gr.update(visible=k < len(r)) for k in range(5)],
                    *[video_html(app, r[k], k) if k < len(r) else "" for k in range(5)],
                    *[gr.update(value=None, visible=k < len(r)) for k in range(5)], gr.update(visible=bool(r))]

        def render(s: LabelSession | None, note: str | None = None, pair: bool = True, ranking: bool = True) -> list:
            """Every output; the views not asked for (and the note, when None) keep what they show."""
            if s is None:  # the page has not finished loading
                return [gr.update()] * len(outputs)
            p = app.progress(s.labeller)
            note = gr.update() if note is None else note
            return [s, progress_text(p, app.agreement(s.labeller)), note, done_text(p),
                    *(show_pair(s) if pair else [gr.update()] * len(pair_parts)),
                    *(show_ranking(s) if ranking else [gr.update()] * len(rank_parts))]

        def load(request: gr.Request):
            try:
                labeller = check_labeller(request.query_params.get("labeller") or app.labeller)
            except LabelError as e:
                gr.Warning(f"{e}; labelling as {app.labeller}")
                labeller = app.labeller
            return render(LabelSession(labeller, app.next_pair(labeller)))  # the ranking: when its tab opens

        def label_pair(choice, s: LabelSession | None):
            if s is None or s.pair is None:
                return render(s, ranking=False)
            try:
                app.submit(s.labeller, "pair", s.pair, CHOICES[choice])
                note = f"✓ Saved: {SAID[choice]} (episodes {s.pair[0]} and {s.pair[1]})."
            except LabelError as e:
                gr.Warning(str(e))
                note = f"Not saved: {e}"
            s.pair = app.next_pair(s.labeller)
            return render(s, note, ranking=False)

        def label_ranking(s: LabelSession | None, *given):
            if s is None or s.ranking is None:
                return render(s, pair=False)
            given = given[:len(s.ranking)]
            if any(g is None for g in given):
                missing = ", ".join(LETTERS[k] for k, g in enumerate(given) if g is None)
                gr.Warning(f"Give every video a level before submitting (missing: {missing}).")
                return render(s, f"Not saved: no level for {missing}.", pair=False, ranking=False)
            try:
                app.submit(s.labeller, "ranking", s.ranking, [float(g) for g in given])
                note = ranking_note(s.ranking, given)
            except LabelError as e:
                gr.Warning(str(e))
                note = f"Not saved: {e}"
            s.ranking = app.next_ranking(s.labeller)
            return render(s, note, pair=False)

        def undo_last(s: LabelSession | None):
            undone = None if s is None else app.undo(s.labeller)
            if undone is None:
                return render(s, "Nothing to undo.", pair=False, ranking=False)
            if undone["kind"] == "pair":
                s.pair = tuple(undone["episodes"])
            else:
                s.ranking = undone["episodes"]
            return render(s, f"↶ Undid your {undone['kind']} label on episodes {undone['episodes']}: "
                             "it is shown again, to label afresh (the undone label is kept, marked undone).")

        def stale(episodes, labeller) -> bool:  # labelled meanwhile in the other tab: never show a pair twice
            answered = app.store.answered(labeller)
            return episodes is None or any(tuple(sorted(p)) in answered for p in itertools.combinations(episodes, 2))

        def open_pairs(s: LabelSession | None):
            if s is None or not stale(s.pair, s.labeller):
                return render(s, pair=False, ranking=False)
            s.pair = app.next_pair(s.labeller)
            return render(s, ranking=False)

        def open_ranking(s: LabelSession | None):
            if s is None or not stale(s.ranking, s.labeller):
                return render(s, pair=False, ranking=False)
            s.ranking = app.next_ranking(s.labeller)
            return render(s, pair=False)

        page.load(load, None, outputs)
        pairs_tab.select(open_pairs, session, outputs)
        ranking_tab.select(open_ranking, session, outputs)
        for choice, button in buttons.items():
            button.click(lambda s, c=choice: label_pair(c, s), session, outputs)
        rank_submit.click(label_ranking, [session, *radios], outputs)
        undo.click(undo_last, session, outputs)
    return page


# -- the server ------------------------------------------------------------------------------------------
def allowed_hosts(host: str) -> set[str] | None:
    """The Host names a request may carry: the bound address and loopback's names; None (any) for a wildcard
    bind, which needs a token anyway."""
    return None if host in WILDCARD else {host.lower().strip("[]"), *LOOPBACK}


def refusal(request, hosts: set[str] | None) -> tuple[int, str] | None:
    """(status, reason) for a request this server never answers: another Host (DNS rebinding) or an upload."""
    name = urlsplit("//" + request.headers.get("host", "")).hostname or ""
    if hosts is not None and name not in hosts:
        return 400, (f"Host header {name!r} is not this server's address ({', '.join(sorted(hosts))}); open the "
                     "address `hf-agents label` printed (requests under other names are refused: DNS rebinding)")
    if NO_UPLOADS.fullmatch(request.url.path):
        return 403, "the labelling app takes no files: uploads are disabled"
    return None


def build_server(app: LabellingApp, token: str | None = None, host: str = "127.0.0.1"):
    """FastAPI app: the page at /, the JSON API under /api, videos under /videos; requests for another Host and
    uploads are refused, and with a token every request needs it."""
    import gradio as gr
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse

    server = FastAPI(title="hf-agents labelling", docs_url=None, redoc_url=None, openapi_url=None)
    hosts = allowed_hosts(host)

    @server.middleware("http")
    async def guard(request: Request, call_next):
        refused = refusal(request, hosts)
        if refused:
            return JSONResponse({"detail": refused[1]}, status_code=refused[0])
        if not token:
            return await call_next(request)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or bearer
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"detail": "access token required: open the address `hf-agents label` printed "
                                           "(it ends in ?token=...)"}, status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    @server.get("/videos/{name}")
    def video(name: str):
        found = re.fullmatch(r"(\d{1,18})\.webm", name)
        if not found or int(found.group(1)) not in app.videos.index:
            raise HTTPException(404, f"no video '{name}' in {app.trajectories_path}")
        return FileResponse(app.videos.path(int(found.group(1))), media_type="video/webm")

    add_api(server, app)
    page = build_page(app).queue(default_concurrency_limit=8)
    from gradio.themes import Default

    theme = Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts to fetch
    return gr.mount_gradio_app(server, page, path="/", head=HEAD, css=CSS, theme=theme, ssr_mode=False,
                               allowed_paths=[])


def add_api(server, app: LabellingApp) -> None:
    """The JSON API: next episodes, labels, undo, progress and a summary with agreement."""
    from fastapi import HTTPException

    from hf_agents.data.labels import label_summary

    @server.get("/api/next")
    def next_episodes(labeller: str, kind: str = "pair"):
        if kind not in ("pair", "ranking"):
            raise HTTPException(400, "kind must be 'pair' or 'ranking'")
        found = app.next_pair(labeller) if kind == "pair" else app.next_ranking(labeller)
        return {"episodes": None if found is None else list(found)}

    @server.post("/api/labels")
    def add_label(label: LabelIn):
        try:
            label_id = app.submit(label.labeller, label.kind, label.episodes, label.scores)
        except LabelError as e:
            raise HTTPException(400, str(e)) from None
        return {"id": label_id, **app.progress(label.labeller.strip())}

    @server.post("/api/undo")
    def undo(body: UndoIn):
        try:
            undone = app.undo(body.labeller)
        except LabelError as e:
            raise HTTPException(400, str(e)) from None
        if undone is None:
            raise HTTPException(409, f"{body.labeller} has no label to undo on {app.trajectories_path}")
        return {"undone": undone, **app.progress(body.labeller.strip())}

    @server.get("/api/progress")
    def progress(labeller: str):
        return app.progress(labeller)

    @server.get("/api/summary")
    def summary():
        return label_summary(app.store.path)


def serve(app: LabellingApp, host: str = "127.0.0.1", port: int = 7860, token: str | None = None) -> None:
    """Run the server until interrupted; binding beyond loopback needs a token."""
    import uvicorn

    if host not in LOOPBACK and not token:
        raise ValueError(f"--host {host} exposes the videos and labels beyond this machine; pass --token SECRET "
                         "(or HF_AGENTS_LABEL_TOKEN) and share the printed address, or keep the default 127.0.0.1")
    address = f"http://{'[' + host + ']' if ':' in host else host}:{port}/?labeller={app.labeller}"
    print(f"labelling {app.trajectories_path} as {app.labeller}: open {address}"
          + (f"&token={token}" if token else ""), flush=True)
    uvicorn.run(build_server(app, token, host), host=host, port=port, log_level="warning")
