"""Assistant answers as an LLM chat service stores them: mostly a few hundred characters, a
tail from 4 KiB up to 64 KiB, with markdown, code blocks, emoji and non-Latin scripts.

Sizes are UTF-8 bytes of the ``content`` string (what a BSON document holds). Every answer
comes from the generator's own ``random.Random``, so a seed gives the same answers and the
rest of the seeded data does not depend on them.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

KIB = 1024
#: The size classes: (share, smallest, largest) in bytes; the tail is log-uniform.
SHORT = (0.78, 60, 450)
MEDIUM = (0.17, 900, 4 * KIB)
TAIL = (0.05, 4 * KIB, 64 * KIB)
#: The largest answer a seed forces (at least one, so every seeded database holds one).
HUGE = (60 * KIB, 64 * KIB)

_PROSE = {
    "en": (
        "Sure! Here's what the image shows: a gradient from teal to orange with {n} shapes.",
        "The short answer is **yes**, but there are {n} caveats worth knowing about.",
        "I looked at the chart again 📈: the spike on day {n} comes from a double count.",
        "That error usually means the connection pool is exhausted; raise `maxPoolSize` "
        "to {n} or close cursors you no longer need.",
        "Great question! 🙌 The document lists {n} invoices, two of them overdue.",
        "Here is a summary in {n} points. Let me know if you want more detail ✨",
        "Unfortunately I can't read handwriting this small 😅, could you send a sharper "
        "photo?",
        "In short: cache the result, invalidate it on write, and measure before and after.",
        "The café's menu (naïve translation): crème brûlée, jalapeño poppers, piña colada.",
        "Step {n}: open *Settings → Privacy*, then toggle “Share analytics” off.",
    ),
    "zh": (
        "这张图片显示了一个渐变背景，上面有{n}个彩色形状。🎨",
        "根据文档内容，第{n}条规定要求每季度提交一次报告。",
        "简而言之：先缓存结果，写入时再使其失效。",
        "如果还有其他问题，请随时告诉我！😊",
    ),
    "ja": (
        "画像には{n}個の図形が写っています。背景はグラデーションです。",
        "この文書は請求書で、支払期限は{n}日後です。🗾",
        "ご質問ありがとうございます。以下に手順をまとめました。",
    ),
    "ko": (
        "이미지에는 {n}개의 도형이 있으며 배경은 그라데이션입니다.",
        "요약하자면, 결과를 캐시하고 쓰기 시 무효화하세요. 👍",
    ),
    "ar": (
        "تُظهر الصورة خلفية متدرجة مع {n} أشكال ملونة.",
        "باختصار: خزّن النتيجة مؤقتًا وأبطلها عند الكتابة. 🌙",
        "هل تريد مني ترجمة بقية المستند إلى الإنجليزية؟",
    ),
    "he": ("התמונה מציגה רקע מדורג עם {n} צורות צבעוניות.",),
    "ru": (
        "На изображении градиентный фон и {n} цветных фигур.",
        "Короче говоря: кэшируйте результат и сбрасывайте его при записи. 🚀",
        "Документ содержит {n} счетов, два из них просрочены.",
    ),
    "hi": ("इस चित्र में {n} रंगीन आकृतियाँ और एक ग्रेडिएंट पृष्ठभूमि है।",),
    "el": ("Η εικόνα δείχνει ένα φόντο διαβάθμισης με {n} χρωματιστά σχήματα.",),
    "th": ("ภาพนี้แสดงพื้นหลังไล่สีพร้อมรูปทรง {n} รูป",),
    "mixed": (
        "Emoji check: 👩‍💻 👨‍👩‍👧‍👦 👍🏽 🇯🇵 🇸🇦 🏳️‍🌈 ❤️‍🔥 — all rendered fine.",
        "Math: ∀x ∈ ℝ, x² ≥ 0; ∑ᵢ aᵢ = {n}; 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝒔𝒄𝒓𝒊𝒑𝒕 ≠ ASCII.",
        "Mixed direction: the file is called «تقرير_{n}.pdf» (עברית too).",
        "Combining marks: Å vs Å, é vs é, and Zalgo-ish t̸̡e̵͙x̷̣t̶̰.",
    ),
}
_LANGS = tuple(_PROSE)
_OTHER = tuple(lang for lang in _LANGS if lang != "en")

_CODE = (
    ("python", "def resize(image, width: int = {n}):\n"
               "    \"\"\"Keep the aspect ratio.\"\"\"\n"
               "    ratio = width / image.width\n"
               "    return image.resize((width, round(image.height * ratio)))\n"),
    ("python", "for i, row in enumerate(rows[:{n}]):\n"
               "    print(f\"{{i:>3}} │ {{row['name']:<20}} │ {{row['total']:>8.2f}} €\")\n"),
    ("javascript", "const res = await fetch(`/api/v1/chat/sessions/${{id}}/messages?limit={n}`);\n"
                   "if (!res.ok) throw new Error(`HTTP ${{res.status}}`);\n"
                   "const {{ messages }} = await res.json();\n"),
    ("sql", "SELECT user_id, COUNT(*) AS n\nFROM messages\nWHERE created_at > now() - "
            "interval '{n} days'\nGROUP BY user_id\nORDER BY n DESC;\n"),
    ("bash", "curl -sS -H \"Authorization: Bearer $TOKEN\" \\\n"
             "  \"http://localhost:8000/api/v1/chat/files/$FILE_ID?thumb={n}\" -o out.png\n"),
    ("json", "{{\n  \"event\": \"usedTools\",\n  \"data\": [{{\"tool\": \"calculator\", "
             "\"toolInput\": {{\"input\": \"{n}*2\"}}, \"toolOutput\": \"{m}\"}}]\n}}\n"),
    ("go", "func sum(xs []int) (total int) {{\n\tfor _, x := range xs[:{n}] {{\n"
           "\t\ttotal += x\n\t}}\n\treturn\n}}\n"),
)
_LISTS = (
    "- **Colour:** #{n:06x}\n- **Size:** {n} × {m} px\n- **Format:** PNG (RGBA)",
    "1. Export the file\n2. Run the converter with `--quality {n}`\n3. Re-upload ✅",
    "| metric | before | after |\n|---|---:|---:|\n| p50 | {n} ms | {m} ms |\n"
    "| p99 | {m} ms | {n} ms |",
)
_HEADINGS = ("### Summary", "### Details", "## Steps", "### 日本語の説明", "### Пример",
             "### مثال", "#### Notes 📝")


_NON_LATIN = re.compile("[\u0370-\u06ff\u0900-\u097f\u0e00-\u0e7f\u3040-\u30ff"
                        "\u4e00-\u9fff\uac00-\ud7af]")
_EMOJI = re.compile("[\U0001f300-\U0001faff]")


@dataclass
class AnswerStats:
    """What a generator produced (sizes in UTF-8 bytes)."""

    answers: int = 0
    long: int = 0  # 4 KiB or more
    longest: int = 0
    with_code: int = 0
    non_latin: int = 0  # Greek, Cyrillic, Hebrew, Arabic, Devanagari, Thai, CJK, Hangul
    with_emoji: int = 0


class _Pools:
    """Rendered pieces, built once from a fixed seed: an answer is a choice of them, so a
    64 KiB answer costs a join, not hundreds of random draws."""

    def __init__(self) -> None:
        rng = random.Random("answer pieces")
        self.prose = {lang: [self._prose(rng, lang) for _ in range(48)] for lang in _LANGS}
        self.code = [self._code(rng) for _ in range(64)]
        self.lists = [rng.choice(_LISTS).format(n=rng.randrange(2, 500), m=rng.randrange(2, 500))
                      for _ in range(32)]
        # a long answer's sections: section k speaks _LANGS[k % len(_LANGS)]
        self.sections = []
        for k in range(8 * len(_LANGS)):
            lang = _LANGS[k % len(_LANGS)]
            parts = [rng.choice(_HEADINGS), rng.choice(self.prose[lang]),
                     rng.choice(self.code), rng.choice(self.prose[lang])]
            if rng.random() < 0.5:
                parts.append(rng.choice(self.lists))
            self.sections.append(_sized("\n\n".join(parts)))
        self.prose_sized = {lang: [_sized(p) for p in v] for lang, v in self.prose.items()}
        self.code_sized = [_sized(c) for c in self.code]
        self.lists_sized = [_sized(x) for x in self.lists]

    @staticmethod
    def _prose(rng: random.Random, lang: str) -> str:
        n = rng.randrange(2, 500)
        return " ".join(rng.choice(_PROSE[lang]).format(n=n + j) for j in range(rng.randint(1, 4)))

    @staticmethod
    def _code(rng: random.Random) -> str:
        name, body = rng.choice(_CODE)
        lines = body.format(n=rng.randrange(2, 500), m=rng.randrange(2, 500))
        if rng.random() < 0.3:  # a longer listing: the body a few times over
            lines = lines * rng.randint(2, 6)
        return f"```{name}\n{lines}```"


_CODE_FLAG, _NON_LATIN_FLAG, _EMOJI_FLAG = 1, 2, 4


def _sized(text: str) -> tuple[str, int, int]:
    """(text, UTF-8 size, flags): what an answer made of it holds, known without a scan."""
    flags = ((_CODE_FLAG if "```" in text else 0)
             | (_NON_LATIN_FLAG if _NON_LATIN.search(text) else 0)
             | (_EMOJI_FLAG if _EMOJI.search(text) else 0))
    return text, len(text.encode("utf-8")), flags


_pools: _Pools | None = None


def _the_pools() -> _Pools:
    global _pools
    if _pools is None:
        _pools = _Pools()
    return _pools


class Answers:
    """Deterministic answers; ``expected`` (about how many will be asked for) places the
    forced long and huge answers early enough that small seeds hold them too."""

    def __init__(self, seed: int, expected: int) -> None:
        self.rng = random.Random(f"answers:{seed}")
        span = max(1, expected // 2)
        self.huge_at = self.rng.randrange(span)
        self.long_at = self.rng.randrange(span)
        self.stats = AnswerStats()
        self._had_huge = self._had_long = False
        self._pools = _the_pools()

    def next(self) -> str:
        """The next answer."""
        rng, i = self.rng, self.stats.answers
        if not self._had_huge and i >= self.huge_at:
            target = rng.randint(*HUGE)
        elif not self._had_long and i >= self.long_at:
            target = rng.randint(TAIL[1], 16 * KIB)
        else:
            x = rng.random()
            if x < SHORT[0]:
                target = rng.randint(SHORT[1], SHORT[2])
            elif x < SHORT[0] + MEDIUM[0]:
                target = rng.randint(MEDIUM[1], MEDIUM[2])
            else:
                target = int(math.exp(rng.uniform(math.log(TAIL[1]), math.log(TAIL[2]))))
        text, size, flags = self._long(target) if target >= TAIL[1] else self._short(target)
        st = self.stats
        st.answers += 1
        st.long += size >= TAIL[1]
        st.longest = max(st.longest, size)
        st.with_code += bool(flags & _CODE_FLAG)
        st.non_latin += bool(flags & _NON_LATIN_FLAG)
        st.with_emoji += bool(flags & _EMOJI_FLAG)
        self._had_huge |= size >= HUGE[0]
        self._had_long |= size >= TAIL[1]
        return text

    def _short(self, target: int) -> tuple[str, int, int]:
        """Prose in one language, now and then a code block or a list, until about
        ``target`` bytes: (text, size, flags)."""
        rand, pools = self.rng.random, self._pools
        x = rand()
        prose = pools.prose_sized["en" if x < 0.65 else _OTHER[int((x - 0.65) / 0.35
                                                                   * len(_OTHER))]]
        text, size, flags = prose[int(rand() * len(prose))]
        parts = [text]
        while size < target:
            x = rand()
            pool = prose if x < 0.7 else pools.code_sized if x < 0.85 else pools.lists_sized
            text, n, f = pool[int(rand() * len(pool))]
            parts.append(text)
            size += n + 2
            flags |= f
        return "\n\n".join(parts), size, flags

    def _long(self, target: int) -> tuple[str, int, int]:
        """Consecutive sections (so a long one goes through every script) until
        ``target`` bytes, the last cut to fit, as a token limit cuts an answer."""
        sections = self._pools.sections
        k = self.rng.randrange(len(sections))
        parts, size, flags = [], -2, 0  # no separator before the first
        while True:
            text, n, f = sections[k % len(sections)]
            k += 1
            flags |= f
            if size + 2 + n >= target:  # the last one, cut on a character boundary
                last = text.encode("utf-8")[:target - size - 2].decode("utf-8", "ignore")
                parts.append(last)
                size += 2 + len(last.encode("utf-8"))
                return "\n\n".join(parts), size, flags
            parts.append(text)
            size += 2 + n
