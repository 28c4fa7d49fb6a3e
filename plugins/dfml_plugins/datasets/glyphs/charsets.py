"""Hand-written candidate characters for the three ``glyphs`` domains.

These lists are only the *input* of the class selection in :mod:`.render`:
candidates are dropped automatically when fewer than two font faces really
contain them, when Unicode decomposes them (accented letters, negated
operators, compatibility forms) or when their normalised bitmap is too similar
to an already kept candidate.  The order matters: the greedy de-duplication
keeps the *first* of two look-alikes, and the domains are processed in the
order of :data:`DOMAIN_ORDER`, so no character can end up in two domains.
"""

from __future__ import annotations

DOMAIN_ORDER: tuple[str, ...] = ("letters", "symbols", "scripts")

# ---------------------------------------------------------------- letters ---
_LATIN_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LATIN_LOWER = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
# Base letters of Latin extensions (no diacritics, no "letter with stroke").
_LATIN_EXTRA = "ÆæŒœßÞþðŊŋƏƐƩʃƷʒƔɣƆɑƱȜǷƕʔʕɤɮʘƢ"
_GREEK_UPPER = "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ"
_GREEK_LOWER = "αβγδεζηθικλμνξοπρςστυφχψω"
_CYRILLIC_UPPER = "АБВГДЕЖЗИКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"
_CYRILLIC_LOWER = "абвгдежзиклмнопрстуфхцчшщъыьэюя"
_CYRILLIC_EXTRA = "ЂЄЅІЈЉЊЋЏђєѕіјљњћџѢѣѲѳѴѵѦѧѪѫѮѯѰѱѠѡӘәӨөҺһҮүѤѨѬѺҨ"

LETTERS: str = (
    _LATIN_UPPER
    + _LATIN_LOWER
    + _DIGITS
    + _GREEK_UPPER
    + _GREEK_LOWER
    + _CYRILLIC_UPPER
    + _CYRILLIC_LOWER
    + _LATIN_EXTRA
    + _CYRILLIC_EXTRA
)

# ---------------------------------------------------------------- symbols ---
_MATH = (
    "+=<>*†‡±×÷"
    "∀∂∃∅∇∈∋∏∑√∝∞∟∠∧∨∩∪∫∮∴∵∷≀≃≅≈≋≡≤≥≪≫≶"
    "≺≻⊂⊃⊆⊇⊏⊐⊓⊔⊕⊖⊗⊘⊙⊛⊞⊠⊢⊤⊨⊲⊻⊼⊽⋄⋆⋈⋔⋮⋰"
    "ℵ℘℧"
)
_ARROWS = "←↑↔↕↖↩↭↯↰↴↵↶↺⇄⇅⇐⇔⇕⇚⇜⇠⇤⇦⟲"
_GEOMETRIC = (
    "■□▢▣▤▥▦▧▩▬▰▱▲△▶▷►▻◆◇◈◉◊○◌◍◎●◐◒◔◕◘◙◜◠◢◧◩◫◬◭◰◴◸"
)
_TECHNICAL = (
    "⌀⌁⌂⌅⌆⌇⌈⌑⌒⌓⌔⌕⌘⌠⌤⌥⌦⌧⌨⌫⌬⌶⌷⌸⌹⌺⌻⌼⌽⌾"
    "⍉⍋⍟⍰⍱⎈⎊⎋⎔⏎⏏⏣⏥"
)
# A few pictographic symbols for variety.
_MISC = "☂☃☎☘☠☯♔♘♪♫♭⚓⚙✂✈✌✍✓"

SYMBOLS: str = _MATH + _ARROWS + _GEOMETRIC + _TECHNICAL + _MISC

# ---------------------------------------------------------------- scripts ---
# Basic Canadian syllabics: vowel series plus P T K C M N S Y L R F TH series
# (e/i/o/a orientations only; the dotted long-vowel and w- forms are left out
# because they differ from these by a single dot).
_CANADIAN = (
    "ᐁᐃᐅᐊᐯᐱᐳᐸᑌᑎᑐᑕᑫᑭᑯᑲᒉᒋᒍᒐᒣᒥᒧᒪᓀᓂᓄᓇᓭᓯᓱᓴᔦᔨᔪᔭᓓᓕᓗᓚᕂᕆᕈᕋᕓᕕᕗᕙᕞᕠᕤᕦ"
)
_ARMENIAN_UPPER = "ԱԲԳԴԵԶԷԸԹԺԻԼԽԾԿՀՁՂՃՄՅՆՇՈՉՊՋՌՍՎՏՐՑՒՓՔՕՖ"
_GEORGIAN = "აბგდევზთიკლმნოპჟრსტუფქღყშჩცძწჭხჯჰ"
_HEBREW = "אבגדהוזחטיךכלםמןנסעףפץצקרשת"
_LAO = "ກຂຄງຈຊຍດຕຖທນບປຜຝພຟມຢຣລວສຫອຮ"
_BOX = "┼╋╬╳╭╰╱├┬╔╠╦╪╫▚▞▙▟"
_BRAILLE = "⠿⡇⣿⢸⠛⣤⠶⡔⢎⣆⡱⢣⠺⢵⣪⡕"

SCRIPTS: str = (
    _GEORGIAN
    + _ARMENIAN_UPPER
    + _HEBREW
    + _CANADIAN
    + _LAO
    + _BOX
    + _BRAILLE
)

CANDIDATES: dict[str, str] = {
    "letters": LETTERS,
    "symbols": SYMBOLS,
    "scripts": SCRIPTS,
}

# Hand exclusions on top of the automatic de-duplication (which catches most
# of these too, see render.DEDUPE_THRESHOLD).  These are the classic
# look-alikes that stay ambiguous once glyph size is normalised away (every
# instance is scaled to fill its box): lower case letters that are small
# copies of their capital, 0/O and 1/l/I, plus shapes that only look alike in
# some of the faces.  Letters with a stroke/tail/descender added to another
# letter (Đ, Ҝ, Қ, ...) and the Komi ligature letters are simply not candidates.
HAND_EXCLUDED: frozenset[str] = frozenset(
    "cosvwxz"  # same shape as C O S V W X Z
    "0"  # vs O
    "1l"  # vs I
    "ѕіј"  # Cyrillic homoglyphs of s i j
    "ς"  # Greek final sigma is a c-like form
    "к"  # Cyrillic small ka is a small capital K
    # Look-alikes of a kept class in *some* faces only (the automatic test
    # uses one reference face): serif I, Armenian S/U shapes, bar-over-wedge.
    "⌶ՏԱ⌅"
    "ƷѰѱ"  # ezh reads as 3, Cyrillic psi as Greek psi in most faces
)
