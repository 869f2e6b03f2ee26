"""The designers' labelling app: a Gradio page (pairs side by side, or up to 5 videos ranked) over one
trajectory dataset, a small JSON API beside it, and the episode videos, on one FastAPI server.

Safe by default: it binds 127.0.0.1; another address needs an access token; it serves only the videos of its
own dataset (a route that takes an episode id, never a path); labels for unknown episodes are refused.
"""


import hmac
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from hf_agents.data import load_trajectories
from hf_agents.data.labels import LabelError, LabelStore
from hf_agents.labelling.choose import PairChooser
from hf_agents.labelling.videos import EpisodeVideos
from hf_agents.locations import fingerprint

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a closed network
LOOPBACK = ("127.0.0.1", "localhost", "::1")
LETTERS = "ABCDE"
CHOICES = {"left": [1.0, 0.0], "right": [0.0, 1.0], "tie": [0.0, 0.0], "skip": None}
TOKEN_COOKIE = "hf_agents_label_token"

HEAD = """
<script>
// Keyboard: A or left arrow = left better, D or right arrow = right better, S or down = tie, W or up = skip.
document.addEventListener('keydown', (ev) => {
  if (ev.target.closest && ev.target.closest('input, textarea, select')) return;
  const keys = {a: 'label-left', ArrowLeft: 'label-left', d: 'label-right', ArrowRight: 'label-right',
                s: 'label-tie', ArrowDown: 'label-tie', w: 'label-skip', ArrowUp: 'label-skip'};
  const button = document.getElementById(keys[ev.key]);
  if (button && button.offsetParent !== null) { ev.preventDefault(); button.click(); }
});
// The videos of one comparison play in sync: they start together once all can play, and restart together
// when the last has ended (or when one is clicked).
function hfaRestart(group) {
  group.querySelectorAll('video').forEach((v) => { v.currentTime = 0; v.play().catch(() => {}); });
}
document.addEventListener('canplaythrough', (ev) => {
  const group = ev.target.closest && ev.target.closest('.hfa-group');
  if (!group || group.dataset.started) return;
  const videos = [...group.querySelectorAll('video')];
  if (videos.every((v) => v.readyState >= 3)) { group.dataset.started = '1'; hfaRestart(group); }
}, true);
document.addEventListener('ended', (ev) => {
  const group = ev.target.closest && ev.target.closest('.hfa-group');
  if (group && [...group.querySelectorAll('video')].every((v) => v.ended)) hfaRestart(group);
}, true);
document.addEventListener('click', (ev) => {
  const group = ev.target.tagName === 'VIDEO' && ev.target.closest('.hfa-group');
  if (group) hfaRestart(group);
}, true);
</script>
"""
CSS = """
.hfa-group { display: flex; gap: 12px; flex-wrap: wrap; justify-content: center; }
.hfa-group figure { margin: 0; text-align: center; }
.hfa-group video { width: 256px; height: 256px; image-rendering: pixelated; background: #000; }
#rank-view .hfa-group video { width: 176px; height: 176px; }
.hfa-group figcaption { font-weight: bold; font-size: 1.2em; }
"""


class LabelIn(BaseModel):
    """A label posted to /api/labels (scores: higher is better; none = skipped)."""

    labeller: str
    kind: str = "pair"
    episodes: list[int]
    scores: list[float] | None = None


@dataclass
class LabelSession:
    """What one open page is showing."""

    labeller: str
    pair: tuple[int, int] | None = None
    ranking: list[int] | None = None


class LabellingApp:
    """Dataset + store + chooser + videos; the page and the API both call `submit` and `next_*`."""

    def __init__(self, trajectories: str, db: str, labeller: str, target: int = 100, levels: int = 5,
                 reward_model: str | None = None, videos: str | None = None, seed: int = 0):
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

    def progress(self, labeller: str) -> dict:
        return {"labeller": labeller, "labelled": self.store.count(labeller), "target": self.target,
                "all_labellers": self.store.count()}


def reward_model_scores(reward_model: str, trajectories) -> dict[int, float]:
    """Each episode's reward under a trained reward model (to pick the pairs it is least sure about)."""
    import torch

    from hf_agents.models import TrajectoryRewardModel

    model = TrajectoryRewardModel.load_trained(reward_model, trajectories.frame_size[0])
    with torch.no_grad():
        rewards = model(embeddings=model.embed_dataset(trajectories)).logits[:, 0].tolist()
    return {int(m["episode_id"]): r for m, r in zip(trajectories.episodes, rewards)}


# -- the page ------------------------------------------------------------------------------------------
def videos_html(episodes) -> str:
    if not episodes:
        return "<p class='hfa-done'>Nothing left to compare here: every pair has been labelled.</p>"
    figures = "".join(f"<figure><figcaption>{LETTERS[k]}</figcaption><video src='/videos/{e}.webm' muted "
                      f"playsinline preload='auto' data-episode='{e}'></video></figure>"
                      for k, e in enumerate(episodes))
    return f"<div class='hfa-group' data-episodes='{','.join(map(str, episodes))}'>{figures}</div>"


def progress_text(p: dict) -> str:
    return (f"**{p['labeller']}**: <span id='labelled-count'>{p['labelled']}</span> of {p['target']} labelled "
            f"({p['all_labellers']} by everyone on this dataset)")


def build_page(app: LabellingApp):
    import gradio as gr

    levels = [str(k) for k in range(1, app.levels + 1)]
    with gr.Blocks(title="hf-agents: label agent videos") as page:
        gr.Markdown("## Which run plays the way you want?\nVideos play together; click one to replay. "
                    "Keys: **A** / **←** left, **D** / **→** right, **S** / **↓** tie, **W** / **↑** skip.")
        progress = gr.Markdown(elem_id="progress")
        session = gr.State()
        with gr.Tabs():
            with gr.Tab("Compare two", id="pairs") as pairs_tab:
                pair_view = gr.HTML(elem_id="pair-view")
                with gr.Row():
                    buttons = {c: gr.Button(text, elem_id=f"label-{c}", variant=v) for c, text, v in (
                        ("left", "◀ A is better", "primary"), ("tie", "Tie", "secondary"),
                        ("right", "B is better ▶", "primary"), ("skip", "Skip", "secondary"))}
            with gr.Tab("Rank several", id="ranking") as ranking_tab:
                gr.Markdown(f"Give each video a level from 1 (worst) to {app.levels} (best); equal levels are ties.")
                rank_view = gr.HTML(elem_id="rank-view")
                with gr.Row():
                    radios = [gr.Radio(levels, label=LETTERS[k], elem_id=f"rank-{LETTERS[k]}") for k in range(5)]
                rank_submit = gr.Button("Submit ranking", elem_id="rank-submit", variant="primary")

        def radio_updates(ranking):
            n = len(ranking or [])
            return [gr.update(value=None, visible=k < n) for k in range(5)]

        def load(request: gr.Request):
            labeller = (request.query_params.get("labeller") or app.labeller).strip()
            s = LabelSession(labeller, app.next_pair(labeller))  # the ranking is chosen when its tab opens
            return [s, progress_text(app.progress(labeller)), videos_html(s.pair), "", *radio_updates(None)]

        def label_pair(choice, s: LabelSession | None):
            if s is None:
                return s, gr.update(), gr.update()
            if s.pair is not None:
                try:
                    app.submit(s.labeller, "pair", s.pair, CHOICES[choice])
                except LabelError as e:
                    gr.Warning(str(e))
                s.pair = app.next_pair(s.labeller)
            return s, progress_text(app.progress(s.labeller)), videos_html(s.pair)

        def label_ranking(s: LabelSession | None, *given):
            if s is None:
                return [s, gr.update(), gr.update(), *[gr.update()] * 5]
            if s.ranking is None:
                return [s, progress_text(app.progress(s.labeller)), videos_html(None), *radio_updates(None)]
            given = given[:len(s.ranking)]
            if any(g is None for g in given):
                gr.Warning("Give every video a level before submitting.")
                return [s, progress_text(app.progress(s.labeller)), gr.update(), *[gr.update()] * 5]
            app.submit(s.labeller, "ranking", s.ranking, [float(g) for g in given])
            s.ranking = app.next_ranking(s.labeller)
            return [s, progress_text(app.progress(s.labeller)), videos_html(s.ranking), *radio_updates(s.ranking)]

        def stale(episodes, labeller) -> bool:  # labelled meanwhile in the other tab: never show a pair twice
            answered = app.store.answered(labeller)
            return episodes is None or any(tuple(sorted(p)) in answered for p in itertools.combinations(episodes, 2))

        def show_pairs(s: LabelSession | None):
            if s is not None and stale(s.pair, s.labeller):  # None: the page has not finished loading
                s.pair = app.next_pair(s.labeller)
                return s, videos_html(s.pair)
            return s, gr.update()

        def show_ranking(s: LabelSession | None):
            if s is not None and stale(s.ranking, s.labeller):
                s.ranking = app.next_ranking(s.labeller)
                return [s, videos_html(s.ranking), *radio_updates(s.ranking)]
            return [s, gr.update(), *[gr.update()] * 5]

        page.load(load, None, [session, progress, pair_view, rank_view, *radios])
        pairs_tab.select(show_pairs, session, [session, pair_view])
        ranking_tab.select(show_ranking, session, [session, rank_view, *radios])
        for choice, button in buttons.items():
            button.click(lambda s, c=choice: label_pair(c, s), session, [session, progress, pair_view])
        rank_submit.click(label_ranking, [session, *radios], [session, progress, rank_view, *radios])
    return page


# -- the server ------------------------------------------------------------------------------------------
def build_server(app: LabellingApp, token: str | None = None):
    """FastAPI app: the page at /, the JSON API under /api, videos under /videos."""
    import gradio as gr
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse

    server = FastAPI(title="hf-agents labelling", docs_url=None, redoc_url=None, openapi_url=None)

    if token:
        @server.middleware("http")
        async def require_token(request: Request, call_next):
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
        return {"id": label_id, **app.progress(label.labeller)}

    @server.get("/api/progress")
    def progress(labeller: str):
        return app.progress(labeller)

    page = build_page(app).queue(default_concurrency_limit=8)
    from gradio.themes import Default

    theme = Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts to fetch
    return gr.mount_gradio_app(server, page, path="/", head=HEAD, css=CSS, theme=theme, ssr_mode=False,
                               allowed_paths=[])


def serve(app: LabellingApp, host: str = "127.0.0.1", port: int = 7860, token: str | None = None) -> None:
    """Run the server until interrupted; binding beyond loopback needs a token."""
    import uvicorn

    if host not in LOOPBACK and not token:
        raise ValueError(f"--host {host} exposes the videos and labels beyond this machine; pass --token SECRET "
                         "(or HF_AGENTS_LABEL_TOKEN) and share the printed address, or keep the default 127.0.0.1")
    address = f"http://{'[' + host + ']' if ':' in host else host}:{port}/?labeller={app.labeller}"
    print(f"labelling {app.trajectories_path} as {app.labeller}: open {address}"
          + (f"&token={token}" if token else ""), flush=True)
    uvicorn.run(build_server(app, token), host=host, port=port, log_level="warning")
