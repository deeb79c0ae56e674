import Foundation
import KilnCore
import KilnHTTP
import Testing

@testable import KilnApp
@testable import KilnNotebooks
@testable import KilnTestSupport

/// Notebooks over HTTP on real files: create, read, cell edits with ETags, a 4.4 notebook without
/// cell ids keeping every field it had, external edits noticed, bad input, permissions.
@Suite struct NotebookTests {
    static func etag(_ r: HTTPResult) -> String { r.headers["etag"] ?? "" }

    @Test func createEditAndReadBack() async throws {
        let f = try await ShellFixture.make()
        try await using(f) { f in
            let a = f.a
            let created = try await a.call(
                "POST", "/api/notebook", json: ["project_id": f.pid, "path": "nb/first.ipynb"])
            #expect(created.status == 201, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            #expect(created.json["nbformat"] as? Int == 4 && created.json["nbformat_minor"] as? Int == 5)
            #expect(created.json["kernel"] as? String == "python3")
            var tag = Self.etag(created)
            #expect(!tag.isEmpty)
            // The id is stable for the path.
            #expect(try await a.call("GET", "/api/notebook?project_id=\(f.pid)").text.contains(id))

            let c1 = try await a.call(
                "POST", "/api/notebook/\(id)/cells", json: ["cell_type": "code", "source": "x = 21\n"],
                headers: ["If-Match": tag])
            #expect(c1.status == 201, "\(c1.text)")
            let cell1 = try #require(c1.json["id"] as? String)
            tag = Self.etag(c1)
            let c2 = try await a.call(
                "POST", "/api/notebook/\(id)/cells",
                json: ["index": 0, "cell_type": "markdown", "source": "# Title\nmore"],
                headers: ["If-Match": tag])
            let cell2 = try #require(c2.json["id"] as? String)
            tag = Self.etag(c2)
            // A stale ETag changes nothing.
            let stale = try await a.call(
                "PATCH", "/api/notebook/\(id)/cells/\(cell1)", json: ["source": "x = 0"],
                headers: ["If-Match": Self.etag(c1)])
            #expect(stale.status == 412, "\(stale.text)")
            let p = try await a.call(
                "PATCH", "/api/notebook/\(id)/cells/\(cell1)",
                json: ["source": "x = 21\nx * 2", "metadata": ["tags": ["t"]]],
                headers: ["If-Match": tag])
            #expect(p.status == 200 && p.json["source"] as? String == "x = 21\nx * 2", "\(p.text)")
            tag = Self.etag(p)
            let m = try await a.call(
                "POST", "/api/notebook/\(id)/cells/\(cell1)/move", json: ["index": 0], headers: ["If-Match": tag])
            #expect(m.status == 200)
            tag = Self.etag(m)

            // On disk: a plain notebook, sources as lines, ids, sorted keys.
            let text = try String(contentsOfFile: f.dir + "/nb/first.ipynb", encoding: .utf8)
            let disk = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            let cells = try #require(disk["cells"] as? [[String: Any]])
            #expect(cells.map { $0["id"] as? String } == [cell1, cell2])
            #expect(cells[0]["source"] as? [String] == ["x = 21\n", "x * 2"])
            #expect((cells[0]["metadata"] as? [String: Any])?["tags"] as? [String] == ["t"])
            #expect(cells[0]["outputs"] as? [Any] != nil && cells[1]["outputs"] == nil)
            #expect(text.hasPrefix("{\n \"cells\": [") && text.hasSuffix("}\n"))

            let gone = try await a.call("DELETE", "/api/notebook/\(id)/cells/\(cell2)", headers: ["If-Match": tag])
            #expect(gone.status == 204)
            let now = try await a.call("GET", "/api/notebook/\(id)")
            #expect((now.json["cells"] as? [[String: Any]])?.count == 1 && Self.etag(now) == Self.etag(gone))
            let listed = try await a.call("GET", "/api/notebook?project_id=\(f.pid)")
            let item = (listed.json["items"] as? [[String: Any]])?.first
            #expect(item?["path"] as? String == "nb/first.ipynb" && item?["cells"] as? Int == 1)
        }
    }

    @Test func aJupyterLab44NotebookKeepsEverything() async throws {
        let old = """
            {
             "cells": [
              {"cell_type": "markdown", "metadata": {"jupyter": {"source_hidden": true}}, "source": ["# Old\\n", "notes"]},
              {"cell_type": "code", "execution_count": 3, "metadata": {"scrolled": true},
               "outputs": [{"name": "stdout", "output_type": "stream", "text": ["hello\\n"]},
                           {"data": {"text/plain": ["42"]}, "execution_count": 3, "metadata": {}, "output_type": "execute_result"}],
               "source": ["x = 21\\n", "x * 2"]}
             ],
             "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                          "language_info": {"name": "python", "version": "3.11.2"}, "x_custom": {"keep": [1, 2]}},
             "nbformat": 4,
             "nbformat_minor": 4
            }
            """
        let f = try await ShellFixture.make(["old.ipynb": old])
        try await using(f) { f in
            let a = f.a
            let list = try await a.call("GET", "/api/notebook?project_id=\(f.pid)")
            // Not indexed yet: a notebook is found once a rescan saw it, or once opened by path.
            _ = try await a.call(
                "POST", "/api/project/rescan", json: ["project_id": f.pid], headers: ["Accept": "application/json"])
            var id: String? = (list.json["items"] as? [[String: Any]])?.first?["id"] as? String
            for _ in 0..<100 where id == nil {
                try await Task.sleep(nanoseconds: 100_000_000)
                id =
                    ((try await a.call("GET", "/api/notebook?project_id=\(f.pid)")).json["items"] as? [[String: Any]])?
                    .first?["id"] as? String
            }
            let nb = try #require(id)
            let doc = try await a.call("GET", "/api/notebook/\(nb)")
            let cells = try #require(doc.json["cells"] as? [[String: Any]])
            #expect(cells.map { $0["id"] as? String } == ["cell-1", "cell-2"], "\(doc.text)")
            #expect(cells[1]["source"] as? String == "x = 21\nx * 2")
            let out = (cells[1]["outputs"] as? [[String: Any]])?.first
            #expect(out?["text"] as? String == "hello\n")
            let p = try await a.call(
                "PATCH", "/api/notebook/\(nb)/cells/cell-1", json: ["source": "# New"],
                headers: ["If-Match": Self.etag(doc)])
            #expect(p.status == 200, "\(p.text)")
            let disk = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: f.dir + "/old.ipynb")))
                    as? [String: Any])
            #expect(disk["nbformat_minor"] as? Int == 5)
            let meta = try #require(disk["metadata"] as? [String: Any])
            #expect((meta["x_custom"] as? [String: Any])?["keep"] as? [Int] == [1, 2])
            #expect((meta["language_info"] as? [String: Any])?["version"] as? String == "3.11.2")
            let dc = try #require(disk["cells"] as? [[String: Any]])
            #expect(dc.map { $0["id"] as? String } == ["cell-1", "cell-2"])
            #expect(
                ((dc[0]["metadata"] as? [String: Any])?["jupyter"] as? [String: Any])?["source_hidden"] as? Bool == true
            )
            #expect((dc[1]["outputs"] as? [[String: Any]])?.count == 2 && dc[1]["execution_count"] as? Int == 3)
            #expect(((dc[1]["outputs"] as? [[String: Any]])?[0]["text"] as? [String]) == ["hello\n"])

            // An edit outside Kiln is noticed: the old ETag no longer matches.
            var changed = try String(contentsOfFile: f.dir + "/old.ipynb", encoding: .utf8)
            changed = changed.replacingOccurrences(of: "# New", with: "# Edited in JupyterLab")
            try changed.write(toFile: f.dir + "/old.ipynb", atomically: true, encoding: .utf8)
            let stale = try await a.call(
                "PATCH", "/api/notebook/\(nb)/cells/cell-2", json: ["source": "y"], headers: ["If-Match": Self.etag(p)])
            #expect(stale.status == 412)
            let fresh = try await a.call("GET", "/api/notebook/\(nb)")
            #expect(fresh.text.contains("Edited in JupyterLab") && Self.etag(fresh) != Self.etag(p))
        }
    }

    @Test func badInputAndPermissions() async throws {
        let f = try await ShellFixture.make([
            "notes.txt": "not a notebook\n", "bad.ipynb": "{\"nbformat\": 3, \"cells\": []}",
        ])
        try await using(f) { f in
            let a = f.a
            func create(_ path: String, _ extra: [String: Any] = [:]) async throws -> HTTPResult {
                var b: [String: Any] = ["project_id": f.pid, "path": path]
                for (k, v) in extra { b[k] = v }
                return try await a.call("POST", "/api/notebook", json: b)
            }
            #expect(try await create("x.txt").status == 400)
            #expect(try await create("../escape.ipynb").status == 400)
            #expect(try await create("/etc/x.ipynb").status == 400)
            #expect(try await create("k.ipynb", ["kernel": "py thon"]).status == 400)
            let ok = try await create("ok.ipynb")
            #expect(ok.status == 201)
            #expect(try await create("ok.ipynb").status == 409)
            let id = try #require(ok.json["id"] as? String)
            #expect(try await a.call("POST", "/api/notebook/\(id)/cells", json: ["cell_type": "bogus"]).status == 400)
            #expect(
                try await a.call("POST", "/api/notebook/\(id)/cells", json: ["cell_type": "code", "index": 5]).status
                    == 400)
            #expect(try await a.call("PATCH", "/api/notebook/\(id)/cells/nope", json: ["source": "x"]).status == 404)
            #expect(
                try await a.call("PATCH", "/api/notebook/\(id)/cells/nope", json: ["metadata": [1]]).status == 400)
            #expect(try await a.call("GET", "/api/notebook/nb_0000").status == 404)
            #expect(try await a.call("GET", "/api/notebook/not-an-id").status == 404)

            _ = try await makeUser(f.t, "viewer@example.com")
            _ = try await a.call(
                "POST", "/api/workspaces/\(f.ws)/members", json: ["email": "viewer@example.com", "role": "viewer"])
            let v = Agent(f.t)
            try await v.login("viewer@example.com", "a long enough password")
            #expect(try await v.call("GET", "/api/notebook/\(id)?ws_id=\(f.ws)").status == 200)
            #expect(try await v.call("POST", "/api/notebook/\(id)/cells", json: ["cell_type": "code"]).status == 403)
            #expect(
                try await v.call("POST", "/api/notebook", json: ["project_id": f.pid, "path": "v.ipynb"]).status == 403)
        }
    }

    @Test func runningWithoutJupyterSays503AndEditingStillWorks() async throws {
        let f = try await ShellFixture.make { c in c.set("--notebook-python", "/bin/false") }
        try await using(f) { f in
            let a = f.a
            let nb = try #require(
                try await a.call("POST", "/api/notebook", json: ["project_id": f.pid, "path": "k.ipynb"]).json["id"]
                    as? String)
            let cell = try #require(
                try await a.call("POST", "/api/notebook/\(nb)/cells", json: ["cell_type": "code", "source": "1"]).json[
                    "id"] as? String)
            let run = try await a.call(
                "POST", "/api/notebook/run/\(nb)/\(cell)", headers: ["Accept": "application/json"])
            #expect(run.status == 503 && run.text.contains("pip install jupyter_client ipykernel"), "\(run.text)")
            #expect(try await a.call("GET", "/api/notebook/\(nb)/kernel").json["state"] as? String == "none")
            #expect(try await a.call("POST", "/api/notebook/\(nb)/interrupt").status == 409)
            #expect(try await a.call("POST", "/api/notebook/run/\(nb)/nope").status == 404)
            // The policy judges runs by the notebook's path, before any kernel is tried.
            let rules: [[String: Any]] = [
                ["id": "no-k", "action": "notebook.run", "effect": "deny", "when": ["path": "k.ipynb"]]
            ]
            #expect(try await a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": rules]).status == 200)
            let denied = try await a.call(
                "POST", "/api/notebook/run/\(nb)/\(cell)", headers: ["Accept": "application/json"])
            #expect(denied.status == 403 && denied.text.contains("no-k"), "\(denied.text)")
            #expect(try await a.call("PUT", "/api/policies", json: ["ws_id": f.ws, "rules": []]).status == 200)
            // A markdown cell has nothing to run; editing goes on without a kernel.
            let md = try #require(
                try await a.call("POST", "/api/notebook/\(nb)/cells", json: ["cell_type": "markdown", "source": "# x"])
                    .json["id"] as? String)
            let done = try await a.call(
                "POST", "/api/notebook/run/\(nb)/\(md)", headers: ["Accept": "application/json"])
            #expect(done.status == 200 && done.json["status"] as? String == "ok", "\(done.text)")
            #expect(
                try await a.call("PATCH", "/api/notebook/\(nb)/cells/\(cell)", json: ["source": "2"]).status == 200)
        }
    }
}
