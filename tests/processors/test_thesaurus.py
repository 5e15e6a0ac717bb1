import importlib.util
import json
import os
import pickle

import pytest

from vlfw.errors import ConfigError, DataError
from vlfw.processors.thesaurus import Thesaurus, builtin_thesauri, fold
from vlfw.world.detector import CLASSES
from vlfw.world.language import COLOR_WORDS, SHAPE_WORDS, plural

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make(**sections):
    options = sections.pop("options", {})
    return Thesaurus.from_dict({"format": "vlfw-thesaurus", "version": 1, "options": options, **sections}, "test.json")


@pytest.fixture(scope="module")
def vg_like():
    return make(terms={"dog": [], "bus": [], "traffic light": [], "laptop": [], "glasses": [], "glass": [],
                       "stop sign": ["stopsign"], "pony": []},
                synonyms={"carpet": ["rug"], "laptop": ["laptop computer"]},
                abbreviations={"compact disk": ["cd"], "television": ["tv"]})


def write(tmp_path, text, name="thesaurus.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- normalisation, one kind at a time ---------------------------------------------------------

def test_fold_case_accents_punctuation():
    assert fold("  Traffic   LIGHT ") == "traffic light"
    assert fold("Café") == "cafe"
    assert fold("T-Shirt") == "t - shirt"
    assert fold("traffic_light") == "traffic light"


def test_case(vg_like):
    assert vg_like.normalise("DOG") == vg_like.normalise("Dog") == "dog"


def test_plural_and_singular(vg_like):
    assert vg_like.normalise("dogs") == "dog"  # -s
    assert vg_like.normalise("buses") == "bus"  # -es
    assert vg_like.normalise("ponies") == "pony"  # -ies -> y
    assert vg_like.normalise("Traffic Lights") == "traffic light"  # last word of a phrase
    assert vg_like.normalise("glass") == "glass" and vg_like.normalise("glasses") == "glasses"  # an entry wins


def test_singular_finds_a_plural_term():
    thesaurus = make(terms={"jeans": [], "skis": []})
    assert thesaurus.normalise("ski") == "skis"  # +s
    assert thesaurus.normalise("jean") == "jeans"


def test_plural_rule_can_be_turned_off():
    thesaurus = make(terms={"dog": []}, options={"plurals": False})
    assert thesaurus.normalise("dog") == "dog"
    assert thesaurus.normalise("dogs") is None


def test_synonym_and_abbreviation(vg_like):
    assert vg_like.normalise("rug") == "carpet"
    assert vg_like.normalise("Rugs") == "carpet"
    assert vg_like.normalise("laptop computer") == "laptop"
    assert vg_like.normalise("CD") == "compact disk"
    assert vg_like.normalise("TVs") == "television"


def test_unknown_words(vg_like):
    assert vg_like.normalise("the") is None
    assert vg_like.normalise("") is None
    assert vg_like.normalise("dogma") is None and vg_like.normalise("bu") is None


def test_multiword_tag_splits_into_words(vg_like):
    assert vg_like.tag_terms("traffic light") == {"traffic light", "traffic", "light"}
    assert vg_like.normalise("light") == "light"  # a word of a multi-word class is a term
    assert vg_like.tag_terms("Stop Sign,stopsign") == {"stop sign", "stop", "sign"}  # comma aliases (VG file)
    unsplit = make(terms={"traffic light": []}, options={"split_multiword_tags": False})
    assert unsplit.tag_terms("traffic light") == {"traffic light"}
    assert unsplit.normalise("light") is None


def test_stopwords_are_never_terms_alone():
    thesaurus = make(terms={"bottle of wine": []}, options={"stopwords": ["of"]})
    assert thesaurus.tag_terms("bottle of wine") == {"bottle of wine", "bottle", "wine"}
    assert thesaurus.normalise("of") is None


def test_caption_phrases_match_longest_first(vg_like):
    words = ["a", "traffic", "lights", "near", "a", "laptop", "computer", "and", "a", "light"]
    assert vg_like.match_words(words) == [("traffic light", (1, 2)), ("laptop", (5, 6)), ("light", (9,))]


def test_a_term_listed_as_another_terms_variant_maps_on():
    thesaurus = make(terms={"cup": [], "mug": []}, synonyms={"cup": ["mug"], "beaker": ["cup"]})
    assert thesaurus.normalise("mug") == thesaurus.normalise("cup") == "beaker"
    assert thesaurus.terms == {"beaker"}


def test_with_terms_adds_class_names_as_terms():
    base = make(synonyms={"square": ["box"]})
    extended = base.with_terms(["__background__", "square", "Circle", "stop sign,stopsign"])
    assert base.normalise("circle") is None
    assert extended.normalise("circles") == "circle"
    assert extended.normalise("boxes") == "square"
    assert extended.normalise("stopsign") == "stop sign"


def test_pickles(vg_like):
    vg_like.tag_terms("traffic light")
    copy = pickle.loads(pickle.dumps(vg_like))
    assert copy.normalise("rugs") == "carpet" and copy.tag_terms("traffic light") == vg_like.tag_terms("traffic light")


# -- bad files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,message", [
    ('{"terms": {"dog": [}', "not valid JSON at line 1"),
    ('["dog", "cat"]', "holds a JSON object, not a list"),
    ('{"terms": ["dog"]}', "terms must be an object"),
    ('{"terms": {"dog": "dogs"}}', "terms.dog must be a list of variant strings, not a string"),
    ('{"synonyms": {"dog": ["puppy", 3]}}', "every variant must be a string"),
    ('{"terms": {"dog": []}, "synonym": {}}', "unknown top-level key(s) 'synonym'"),
    ('{"terms": {"dog": []}, "options": {"plurals": "yes"}}', "options.plurals must be true or false"),
    ('{"terms": {"dog": []}, "version": 2}', "version is 2"),
    ('{"terms": {"dog": []}, "terms": {"cat": []}}', "the key 'terms' appears twice"),
    ('{"synonyms": {"cat": ["pet"], "dog": ["pet"]}}', "'pet' is listed under two terms"),
    ('{"synonyms": {"cat": ["dog"], "dog": ["cat"]}}', "in a cycle"),
    ('{"terms": {"!!": []}}', "has no letters or digits"),
    ('{}', "has no entries"),
])
def test_bad_files_are_one_data_error_naming_the_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as caught:
        Thesaurus.load(path)
    assert str(caught.value).startswith(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_thesaurus_names_the_shipped_ones():
    with pytest.raises(ConfigError, match="no shipped thesaurus of that name.*shapes"):
        Thesaurus.load("shapez")


def test_load_reads_data_only(tmp_path):
    # JSON only: a file that would be code in another format is just a bad document
    path = write(tmp_path, "__import__('os').system('echo pwned')")
    with pytest.raises(DataError, match="not valid JSON"):
        Thesaurus.load(path)


# -- the shipped Shapes thesaurus --------------------------------------------------------------

def test_shapes_is_shipped_and_loads_by_name_and_path():
    assert "shapes" in builtin_thesauri()
    by_name = Thesaurus.load("shapes")
    by_path = Thesaurus.load(os.path.join(REPO, "vlfw", "data", "thesauri", "shapes.json"))
    assert by_name.to_dict() == by_path.to_dict()


def test_shapes_maps_every_generator_word_and_plural_to_its_detector_class():
    thesaurus = Thesaurus.load("shapes")
    detector_classes = set(CLASSES[1:])
    assert set(SHAPE_WORDS) == detector_classes
    for shape, words in SHAPE_WORDS.items():
        for word in words:
            for form in (word, plural(word), word.upper(), word.title()):
                assert thesaurus.normalise(form) == shape, form
        assert thesaurus.tag_terms(shape) == {shape}
    for color, words in COLOR_WORDS.items():
        for word in words:
            assert thesaurus.normalise(word) == color, word
    assert not thesaurus.tag_terms("__background__")
    for word in ("shape", "shapes", "object", "thing", "background", "other"):
        assert thesaurus.normalise(word) is None, word


# -- tools/build_thesaurus.py ------------------------------------------------------------------

def load_tool():
    spec = importlib.util.spec_from_file_location("build_thesaurus", os.path.join(REPO, "tools", "build_thesaurus.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_tool_writes_a_loadable_base_with_vocabulary_forms_and_manual_entries(tmp_path, capsys):
    classes = write(tmp_path, "__background__\nDog\ntraffic light\nstop sign,stopsign\nglasses\nglass\nbus\nlaptop\n",
                    "classes.txt")
    vocab = write(tmp_path, "[PAD]\n[UNK]\ndog\ndogs\ntraffic\nlight\nlights\nstop\nsign\nglass\nglasses\nbus\nbuses\n"
                            "##s\npuppy\n", "vocab.txt")
    manual = write(tmp_path, json.dumps({"synonyms": {"dog": ["puppy"]}, "abbreviations": {"television": ["tv"]}}),
                   "manual.json")
    output = str(tmp_path / "out.json")
    tool = load_tool()
    assert tool.main(["--classes", classes, "--vocab", vocab, "--manual", manual, "--name", "tiny", "-o", output]) == 0
    data = json.loads(open(output, encoding="utf-8").read())
    assert list(data["terms"]) == ["dog", "traffic light", "stop sign", "glasses", "glass", "bus", "laptop"]
    assert data["terms"]["dog"] == ["dogs"]
    assert data["terms"]["bus"] == ["buses"]
    assert data["terms"]["traffic light"] == ["traffic lights"]
    assert data["terms"]["stop sign"] == ["stopsign"]  # "stop signs": "signs" is no whole token
    assert data["terms"]["glasses"] == [] and data["terms"]["glass"] == []  # another class's name is never a variant
    assert data["synonyms"] == {"dog": ["puppy"]} and data["abbreviations"] == {"television": ["tv"]}
    assert data["meta"]["classes"] == 7
    assert data["meta"]["classes_without_a_vocabulary_word"] == ["laptop"]
    assert data["meta"]["classes_meeting_a_vocabulary_word"] == 6
    thesaurus = Thesaurus.load(output)
    assert thesaurus.normalise("Puppies") == "dog"
    assert thesaurus.normalise("puppy") == "dog" and thesaurus.normalise("TV") == "television"
    assert thesaurus.tag_terms("traffic light") == {"traffic light", "traffic", "light"}
    assert "7 classes, 6 meet a vocabulary word" in capsys.readouterr().out


def test_build_tool_json_class_list_without_vocabulary(tmp_path):
    classes = write(tmp_path, json.dumps(["__background__", "circle", "square"]), "classes.json")
    output = str(tmp_path / "out.json")
    assert load_tool().main(["--classes", classes, "-o", output]) == 0
    data = json.loads(open(output, encoding="utf-8").read())
    assert data["terms"] == {"circle": [], "square": []}
    assert data["meta"] == {"classes": 2}


def test_build_tool_refuses_a_conflicting_manual_file(tmp_path, capsys):
    classes = write(tmp_path, "dog\ncat\n", "classes.txt")
    manual = write(tmp_path, json.dumps({"synonyms": {"dog": ["pet"], "cat": ["pet"]}}), "manual.json")
    output = str(tmp_path / "out.json")
    assert load_tool().main(["--classes", classes, "--manual", manual, "-o", output]) == 1
    assert "'pet' is listed under two terms" in capsys.readouterr().err
    assert not os.path.exists(output)
