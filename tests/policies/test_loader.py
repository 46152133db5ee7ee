"""Policy files: loading, merging, and errors that say exactly what is wrong where."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from keyledger.model import Action
from keyledger.policies import (
    Effect,
    PolicyError,
    example_policy_dir,
    load_policy_files,
    load_policy_set,
    resolve_policy_paths,
)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(*paths: Path) -> tuple[str, ...]:
    with pytest.raises(PolicyError) as caught:
        load_policy_files(list(paths))
    return caught.value.problems


READER = """
    version: 1
    roles:
      - id: reader
        rules:
          - id: read-staging
            actions: [read]
            resources: ["aws:staging/*"]
"""


class TestExamplePolicy:
    def test_shipped_example_loads(self) -> None:
        """The policy `serve --dev` ships with is valid and has the documented rules."""
        paths = resolve_policy_paths([example_policy_dir()])
        policy = load_policy_files(paths)

        assert [p.name for p in paths] == ["demo.yaml"]
        rules = {r.id: r for r in policy.roles["demo-app"].rules}
        assert set(rules) == {"demo-read-staging", "demo-read-prod-db", "demo-deny-payments"}
        assert rules["demo-deny-payments"].effect is Effect.DENY
        assert rules["demo-deny-payments"].actions == frozenset(Action)
        assert [(b.role, set(b.principals)) for b in policy.bindings] == [
            ("demo-app", {"demo-app"})
        ]
        assert policy.hash.startswith("sha256:")
        assert len(policy.hash) == len("sha256:") + 64


class TestLoadPolicyFiles:
    def test_two_files_merge(self, tmp_path: Path) -> None:
        """Roles, bindings and groups from several files form one policy set."""
        first = write(
            tmp_path,
            "roles.yaml",
            """
            roles:
              - id: reader
                rules:
                  - id: read-staging
                    actions: [read]
                    resources: ["aws:staging/*"]
            groups:
              payments: [svc-checkout]
            """,
        )
        second = write(
            tmp_path,
            "bindings.yaml",
            """
            roles:
              - id: writer
                rules:
                  - id: write-staging
                    actions: [write]
                    resources: ["aws:staging/*"]
            groups:
              refunds: [svc-refunds]
            bindings:
              - role: reader
                groups: [payments, refunds]
              - role: writer
                principals: [svc-admin]
            """,
        )

        policy = load_policy_files([first, second])

        assert set(policy.roles) == {"reader", "writer"}
        assert policy.groups == {
            "payments": frozenset({"svc-checkout"}),
            "refunds": frozenset({"svc-refunds"}),
        }
        assert [(b.role, b.principals, b.groups) for b in policy.bindings] == [
            ("reader", frozenset(), frozenset({"payments", "refunds"})),
            ("writer", frozenset({"svc-admin"}), frozenset()),
        ]
        assert policy.files == (str(first), str(second))

    def test_defaults_and_wildcard_actions(self, tmp_path: Path) -> None:
        """A rule without id or effect gets a derived id and allows; `*` means every action."""
        path = write(
            tmp_path,
            "team.yaml",
            """
            roles:
              - id: admin
                rules:
                  - actions: "*"
                    resources: "aws:*"
            """,
        )

        (rule,) = load_policy_files([path]).roles["admin"].rules

        assert rule.id == "team/admin/0"
        assert rule.effect is Effect.ALLOW
        assert rule.actions == frozenset(Action)
        assert rule.source == f"{path}:4:9"

    def test_unknown_top_level_key_suggests_the_closest(self, tmp_path: Path) -> None:
        """A misspelt top-level key is named, on its line, with the likely intended key."""
        path = write(tmp_path, "p.yaml", "version: 1\nrolez: []\n")

        (problem,) = problems_of(path)

        assert problem.startswith(f"{path}:2:")
        assert problem.endswith(": unknown key 'rolez' in a policy file (did you mean 'roles'?)")

    def test_unknown_key_is_reported_at_the_key_position(self, tmp_path: Path) -> None:
        """An unknown key is reported where the key is written, not where its value starts."""
        path = write(
            tmp_path,
            "p.yaml",
            """
            version: 1
            roles:
              - id: reader
                rulez:
                  - actions: [read]
                    resources: ["aws:a"]
            """,
        )

        assert problems_of(path) == (
            f"{path}:4:5: unknown key 'rulez' in a role (did you mean 'rules'?)",
        )

    def test_unknown_action_suggests_the_closest(self, tmp_path: Path) -> None:
        """`reed` is reported at its rule's actions list with 'did you mean read'."""
        path = write(
            tmp_path,
            "p.yaml",
            """
            roles:
              - id: reader
                rules:
                  - id: r
                    actions: [reed]
                    resources: ["aws:a"]
            """,
        )

        assert problems_of(path) == (f"{path}:5:19: unknown action 'reed' (did you mean 'read'?)",)

    def test_bad_effect(self, tmp_path: Path) -> None:
        """An effect other than allow or deny is reported at the effect's value."""
        path = write(
            tmp_path,
            "p.yaml",
            """
            roles:
              - id: reader
                rules:
                  - effect: permit
                    actions: [read]
                    resources: ["aws:a"]
            """,
        )

        assert problems_of(path) == (f"{path}:4:17: effect must be allow or deny, not 'permit'",)

    def test_resource_without_backend(self, tmp_path: Path) -> None:
        """A resource written without `backend:` is rejected at the resource, with the form."""
        path = write(
            tmp_path,
            "p.yaml",
            """
            roles:
              - id: reader
                rules:
                  - actions: [read]
                    resources: ["staging/*"]
            """,
        )

        assert problems_of(path) == (
            f"{path}:5:21: resource 'staging/*' must be written backend:name (aws:prod/*)",
        )

    def test_duplicate_role_across_files_names_the_first(self, tmp_path: Path) -> None:
        """A role id defined twice is reported at the second and names the first position."""
        first = write(tmp_path, "a.yaml", READER)
        second = write(tmp_path, "b.yaml", READER)

        assert problems_of(first, second) == (
            f"{second}:3:9: duplicate role id 'reader' (first at {first}:3:9)",
        )

    def test_group_declared_twice_is_rejected(self, tmp_path: Path) -> None:
        """Membership lives in one place: a second declaration of a group is an error, not a
        silent union a reviewer of one file would miss."""
        first = write(tmp_path, "a.yaml", "groups:\n  payments: [svc-a]\n")
        second = write(tmp_path, "b.yaml", "groups:\n  payments: [svc-b]\n")

        assert problems_of(first, second) == (
            f"{second}:2:13: duplicate group 'payments' (first at {first}:2:13)",
        )

    def test_duplicate_rule_ids(self, tmp_path: Path) -> None:
        """Two rules with the same id are rejected, naming where the first one is."""
        path = write(
            tmp_path,
            "p.yaml",
            """
            roles:
              - id: reader
                rules:
                  - id: same
                    actions: [read]
                    resources: ["aws:a"]
                  - id: same
                    actions: [describe]
                    resources: ["aws:b"]
            """,
        )

        assert problems_of(path) == (
            f"{path}:7:13: duplicate rule id 'same' (first at {path}:4:13)",
        )

    def test_rule_ids_are_unique_across_roles_and_files(self, tmp_path: Path) -> None:
        """Audit events name rules by id, so an id must mean one rule in the whole set."""
        rule = "rules:\n      - id: shared\n        actions: [read]\n        resources: [aws:a]\n"
        first = write(tmp_path, "a.yaml", "roles:\n  - id: one\n    " + rule)
        second = write(tmp_path, "b.yaml", "roles:\n  - id: two\n    " + rule)

        assert problems_of(first, second) == (
            f"{second}:4:13: duplicate rule id 'shared' (first at {first}:4:13)",
        )

    def test_binding_to_unknown_role(self, tmp_path: Path) -> None:
        """A binding naming a role no file defines is rejected with a suggestion."""
        path = write(
            tmp_path,
            "p.yaml",
            """
            roles:
              - id: reader
                rules:
                  - actions: [read]
                    resources: ["aws:a"]
            bindings:
              - role: raeder
                principals: [svc]
            """,
        )

        assert problems_of(path) == (
            f"{path}:7:11: unknown role 'raeder' (did you mean 'reader'?)",
        )

    def test_yaml_syntax_error_position(self, tmp_path: Path) -> None:
        """Broken YAML is reported at the line and column the parser stopped at."""
        path = write(tmp_path, "p.yaml", "version: 1\nroles:\n  - id: r\n   rules: []\n")

        (problem,) = problems_of(path)
        # The reason is the parser's own: libyaml's where PyYAML has it, else PyYAML's.
        assert problem in (
            f"{path}:4:4: did not find expected '-' indicator",
            f"{path}:4:4: expected <block end>, but found '<block mapping start>'",
        )

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            (
                "a: &x {b: 1}\nroles:\n  <<: *x\n",
                "3:3: cannot read this value: could not determine a constructor for the tag "
                "'tag:yaml.org,2002:merge'",
            ),
            (
                "version: !x 1\n",
                "1:10: cannot read this value: could not determine a constructor for the tag '!x'",
            ),
            (
                "version: !!int abc\n",
                "1:10: cannot read this value: invalid literal for int() with base 10: 'abc'",
            ),
            ("groups: &a {g: *a}\n", "1:9: an alias that contains itself"),
        ],
        ids=["merge-key", "custom-tag", "bad-int", "recursive-alias"],
    )
    def test_yaml_we_do_not_read_is_a_located_problem(
        self, tmp_path: Path, text: str, problem: str
    ) -> None:
        """Merge keys, tags and recursive aliases are reported at their position, never
        a traceback (which would crash start-up or a reload)."""
        path = write(tmp_path, "p.yaml", text)

        assert problems_of(path) == (f"{path}:{problem}",)

    def test_a_file_that_is_one_scalar_names_itself(self, tmp_path: Path) -> None:
        """`hello` as a whole file is reported with the file's name, not `<unknown>`."""
        path = write(tmp_path, "p.yaml", "hello\n")

        assert problems_of(path) == (f"{path}:1:1: a policy file must be a mapping",)

    def test_every_bad_window_and_an_empty_block_are_reported(self, tmp_path: Path) -> None:
        """One run lists every problem: both bad windows of a list, and an empty `unless:`
        (which would otherwise read as 'no condition' without a word)."""
        path = write(
            tmp_path,
            "p.yaml",
            """
            roles:
              - id: r
                rules:
                  - actions: [read]
                    resources: ["aws:a"]
                    when:
                      time:
                        - {timezone: Mars/Base}
                        - {timezone: Venus/Base}
                    unless: {}
            """,
        )

        assert problems_of(path) == (
            f"{path}:8:26: unknown time zone 'Mars/Base' (e.g. Europe/Berlin)",
            f"{path}:9:26: unknown time zone 'Venus/Base' (e.g. Europe/Berlin)",
            f"{path}:10:17: an empty unless: block; remove it or add a condition",
        )

    def test_aliases_are_built_once(self, tmp_path: Path) -> None:
        """A 'billion laughs' document (aliases of aliases) loads in linear time: each
        alias is built once, so it is reported as the policy problem it is."""
        levels = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
            levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
        path = write(tmp_path, "p.yaml", "groups:\n  " + "\n  ".join(levels) + "\n")

        problems = problems_of(path)

        assert problems[0] == f"{path}:3:6: groups.b must be a list of strings"

    def test_duplicate_yaml_key(self, tmp_path: Path) -> None:
        """A key written twice in one mapping is an error, not a silent override."""
        path = write(tmp_path, "p.yaml", "roles: []\nroles: []\n")

        assert problems_of(path) == (f"{path}:2:1: duplicate key 'roles'",)

    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        """Problems in several files are all listed, so one run finds every mistake."""
        first = write(tmp_path, "a.yaml", "rolez: []\n")
        second = write(tmp_path, "b.yaml", "bindings:\n  - role: nobody\n")

        found = problems_of(first, second)

        assert [p.split(":")[0] for p in found] == [str(first), str(second)]

    def test_empty_paths_list(self) -> None:
        """No policy files at all is an error, not an empty set that denies everything."""
        assert problems_of() == (
            "no policy files found (folders and globs skip *test*.yaml files)",
        )

    def test_missing_file(self, tmp_path: Path) -> None:
        """A policy path that does not exist is reported, not skipped."""
        missing = tmp_path / "absent.yaml"

        (problem,) = problems_of(missing)

        assert problem.startswith(f"{missing}: cannot read policy file:")


class TestPolicyHash:
    def test_stable_for_the_same_content(self, tmp_path: Path) -> None:
        """Loading the same files twice, even from another folder, gives the same hash."""
        first = write(tmp_path / "one", "p.yaml", READER)
        copy = write(tmp_path / "two", "p.yaml", READER)

        assert load_policy_files([first]).hash == load_policy_files([first]).hash
        assert load_policy_files([first]).hash == load_policy_files([copy]).hash

    def test_changes_when_a_file_changes(self, tmp_path: Path) -> None:
        """Any edit to a policy file, even a comment, gives a new hash."""
        path = write(tmp_path, "p.yaml", READER)
        before = load_policy_files([path]).hash

        path.write_text(path.read_text() + "# reviewed\n")

        assert load_policy_files([path]).hash != before


class TestResolvePolicyPaths:
    def test_folder_expands_to_yaml_files(self, tmp_path: Path) -> None:
        """A folder means its .yaml and .yml files, sorted; other files are ignored."""
        for name in ("b.yaml", "a.yml", "c.yaml", "notes.txt"):
            write(tmp_path, name, "")

        found = resolve_policy_paths([tmp_path])

        assert [p.name for p in found] == ["a.yml", "b.yaml", "c.yaml"]

    def test_glob_expands(self, tmp_path: Path) -> None:
        """A glob pattern expands to the files it matches."""
        for name in ("prod-a.yaml", "prod-b.yaml", "staging.yaml"):
            write(tmp_path, name, "")

        found = resolve_policy_paths([str(tmp_path / "prod-*.yaml")])

        assert [p.name for p in found] == ["prod-a.yaml", "prod-b.yaml"]

    def test_skips_test_files(self, tmp_path: Path) -> None:
        """Folders and globs skip policy test files (policy tests, not policy)."""
        for name in ("prod.yaml", "prod_test.yaml", "test-roles.yaml", "prod.tests.yaml"):
            write(tmp_path, name, "")

        found = resolve_policy_paths([tmp_path, str(tmp_path / "*.yaml")])

        assert found == [tmp_path / "prod.yaml"]

    def test_words_merely_containing_test_are_policy(self, tmp_path: Path) -> None:
        """latest.yaml and attestation.yaml are policy: skipping them could drop deny rules."""
        for name in ("latest.yaml", "attestation.yaml", "contests-deny.yaml"):
            write(tmp_path, name, "")

        found = resolve_policy_paths([tmp_path])

        assert [p.name for p in found] == ["attestation.yaml", "contests-deny.yaml", "latest.yaml"]

    def test_a_file_named_explicitly_is_always_taken(self, tmp_path: Path) -> None:
        """A file named explicitly is loaded even if its name contains 'test'."""
        path = write(tmp_path, "staging-test.yaml", "")

        assert resolve_policy_paths([path]) == [path]

    def test_a_skipped_test_file_holding_policy_is_an_error(self, tmp_path: Path) -> None:
        """A policy file a folder skips for its name ('deny-test-env.yaml') would drop its
        rules, a deny among them, unnoticed: loading the folder refuses instead."""
        write(tmp_path, "base.yaml", READER)
        misnamed = write(
            tmp_path,
            "deny-test-env.yaml",
            """
            roles:
              - id: fence
                rules:
                  - {effect: deny, actions: ["*"], resources: ["aws:test/*"]}
            bindings:
              - {role: fence, principals: ["*"]}
            """,
        )
        write(tmp_path, "base_test.yaml", "tests: []\n")  # a real test file: fine

        with pytest.raises(PolicyError) as caught:
            load_policy_set([tmp_path])

        assert caught.value.problems == (
            f"{misnamed}: named as a test file ('test' as a word), so it is not loaded as "
            "policy, but it holds roles, bindings or groups: rename it",
        )
        assert load_policy_set([tmp_path / "base.yaml", misnamed]).roles.keys() == {
            "reader",
            "fence",
        }

    def test_duplicates_are_listed_once(self, tmp_path: Path) -> None:
        """A file reached through both a folder and its own name is loaded once."""
        path = write(tmp_path, "p.yaml", "")

        assert resolve_policy_paths([tmp_path, path]) == [path]
