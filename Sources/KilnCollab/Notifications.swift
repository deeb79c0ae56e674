import Foundation
import KilnCore
import KilnHTTP
import KilnStore

/// Notifications: what needs a user (a review, a mention, a run of theirs that ended, an
/// invitation, a role change, a share link opened). Each is stored, pushed live on the user's
/// stream with the new unread count, and mailed when the user asked for mail, at most one mail per
/// kind every ten minutes (the rest wait and go out together).
extension CollabService {
    static func notificationJSON(_ r: Row) -> JSONValue {
        let subject = r.string("subject").flatMap { try? JSONValue(parsing: $0) } ?? .null
        return [
            "id": .string(r.string("id") ?? ""), "kind": .string(r.string("kind") ?? ""),
            "ws_id": r.string("ws_id").map { .string($0) } ?? .null, "title": .string(r.string("title") ?? ""),
            "subject": subject, "actor": r.string("actor").map { .string($0) } ?? .null,
            "created_at": .string(HTTPDate.iso8601(r.date("created_at") ?? Date())),
            "read": .bool(r.date("read_at") != nil),
            "read_at": r.date("read_at").map { .string(HTTPDate.iso8601($0)) } ?? .null,
        ]
    }

    /// Tells `userID` about something, as their settings for `kind` say.
    func notify(
        _ userID: String, kind: String, wsID: String?, title: String, subject: (type: String, id: String),
        actor: String?, detail: [String: JSONValue] = [:]
    ) async throws {
        guard !userID.isEmpty else { return }
        let mode = try await store.settings(userID: userID)[kind] ?? "in_app"
        guard mode != "off" else { return }
        let now = clock.now()
        let id = IDs.ordered("ntf", at: now)
        let subjectJSON = JSONValue.object(
            detail.merging(["type": .string(subject.type), "id": .string(subject.id)]) { $1 })
        try await store.insertNotification(
            id: id, userID: userID, wsID: wsID, kind: kind, title: title, subject: subjectJSON.jsonText, actor: actor,
            mailPending: mode == "email", at: now)
        var shown: [String: JSONValue] = [
            "id": .string(id), "kind": .string(kind), "ws_id": wsID.map { .string($0) } ?? .null,
            "title": .string(title), "subject": subjectJSON, "actor": actor.map { .string($0) } ?? .null,
            "created_at": .string(HTTPDate.iso8601(now)), "read": false, "read_at": .null,
        ]
        shown["unread_count"] = .int(try await store.unreadCount(userID: userID))
        _ = try await bus.publish(
            topic: CollabFeed.notificationTopic(userID), type: "notification", data: JSONValue.object(shown).jsonText)
        if mode == "email" { try await mail(userID: userID, kind: kind) }
    }

    /// `{items, unread_count, next_cursor}`, newest first.
    func notifications(userID: String, unreadOnly: Bool, page: PageRequest) async throws -> JSONValue {
        let rows = try await store.notifications(
            userID: userID, unreadOnly: unreadOnly, before: page.cursor, limit: page.limit + 1)
        let p = Page(fetched: rows.map(Self.notificationJSON), limit: page.limit) {
            $0.objectValue?["id"]?.stringValue ?? ""
        }
        return [
            "items": .array(p.items), "next_cursor": p.nextCursor.map { .string($0) } ?? .null,
            "unread_count": .int(try await store.unreadCount(userID: userID)),
        ]
    }

    /// Marks one notification (nil: all) read; 404 for one that is not the caller's.
    func markRead(userID: String, id: String?) async throws -> JSONValue {
        if let id {
            guard IDs.isValid(id, prefix: "ntf"), try await store.notificationOwner(id) == userID else {
                throw APIError.notFound("No such notification")
            }
        }
        let changed = try await store.markRead(userID: userID, id: id, at: clock.now())
        let unread = try await store.unreadCount(userID: userID)
        if changed > 0 {
            _ = try? await bus.publish(
                topic: CollabFeed.notificationTopic(userID), type: "read",
                data: JSONValue.object(["id": id.map { .string($0) } ?? .null, "unread_count": .int(unread)]).jsonText)
        }
        return ["marked": .int(changed), "unread_count": .int(unread)]
    }

    func settings(userID: String) async throws -> JSONValue {
        let set = try await store.settings(userID: userID)
        var out: [String: JSONValue] = [:]
        for k in NotificationKind.all { out[k] = .string(set[k] ?? "in_app") }
        return ["settings": .object(out), "modes": ["in_app", "email", "off"]]
    }

    func setSettings(userID: String, _ input: SettingsInput) async throws -> JSONValue {
        guard !input.settings.isEmpty else { throw APIError.validation("settings is empty", field: "settings") }
        for (k, v) in input.settings {
            guard NotificationKind.all.contains(k) else {
                throw APIError.validation(
                    "unknown kind \(k.prefix(64)); kinds: \(NotificationKind.all.joined(separator: ", "))",
                    field: "settings")
            }
            guard NotificationKind.modes.contains(v) else {
                throw APIError.validation("settings.\(k) must be in_app, email or off", field: "settings.\(k)")
            }
        }
        try await store.setSettings(userID: userID, input.settings)
        return try await settings(userID: userID)
    }

    /// Sends the waiting notifications of one kind as one mail, unless one went out in the last ten minutes.
    func mail(userID: String, kind: String) async throws {
        let now = clock.now()
        let rows = try await store.takeMail(
            userID: userID, kind: kind, before: now.addingTimeInterval(-NotificationKind.mailInterval), at: now)
        guard !rows.isEmpty, let user = try await users?.user(id: userID), user.disabledAt == nil else { return }
        let lines = rows.map { "- " + ($0.string("title") ?? "") }.joined(separator: "\n")
        let link = baseURL.string + "/w/"
        let about = kind.replacingOccurrences(of: "_", with: " ")
        let body = """
            Hello \(user.name),

            \(rows.count == 1 ? "This happened" : "These \(rows.count) things happened") on Kiln:

            \(lines)

            Open Kiln: \(link)
            You get this mail because your notification settings ask for mail about \(about).

            """
        let subject = rows.count == 1 ? (rows[0].string("title") ?? "Kiln") : "\(rows.count) Kiln notifications"
        do {
            try await mailer.send(
                MailMessage(to: user.email, subject: String(subject.prefix(200)), body: body, link: link))
        } catch {
            ServerLog.warn(
                "notification mail failed", ["kind": .string(kind), "error": .string(String(describing: error))])
        }
    }

    /// The batched mails whose ten minutes are over (every minute).
    func mailDue() async throws {
        let now = clock.now()
        for (user, kind) in try await store.mailDue(before: now.addingTimeInterval(-NotificationKind.mailInterval)) {
            try await mail(userID: user, kind: kind)
        }
    }
}
