import KilnCore
import KilnHTTP

extension Application {
    /// OpenAPI 3.1 for every registered route.
    public func openAPIDocument() -> JSONValue {
        var paths: [String: JSONValue] = [:]
        for doc in routes.docs {
            let (path, params) = Application.openAPIPath(doc.path)
            var parameters: [JSONValue] = params.map {
                ["name": .string($0), "in": "path", "required": true, "schema": ["type": "string", "minLength": 1]]
            }
            for q in doc.query where !params.contains(q.name) {
                parameters.append([
                    "name": .string(q.name), "in": "query", "required": .bool(q.required),
                    "description": .string(q.description), "schema": ["type": "string"],
                ])
            }
            var op: [String: JSONValue] = [
                "operationId": .string(Application.operationID(doc.method, doc.path)),
                "summary": .string(doc.summary),
                "tags": .array(doc.tags.map { .string($0) }),
                "x-kiln-permission": .string(doc.permission),
            ]
            if !parameters.isEmpty { op["parameters"] = .array(parameters) }
            if doc.permission != Permission.publicAccess.name { op["security"] = [["session": []], ["apiKey": []]] }
            if let body = doc.requestBody {
                op["requestBody"] = [
                    "required": .bool(doc.bodyRequired), "content": ["application/json": ["schema": body]],
                ]
            }
            var success: [String: JSONValue] = ["description": .string(doc.summary.isEmpty ? "Success" : doc.summary)]
            if doc.successStatus != 204 {
                success["content"] = .object([
                    doc.responseContentType: [
                        "schema": doc.responseBody
                            ?? (doc.responseContentType == "application/json" ? ["type": "object"] : ["type": "string"])
                    ]
                ])
            }
            op["responses"] = .object([
                String(doc.successStatus): .object(success), "default": ["$ref": "#/components/responses/Error"],
            ])
            var item: [String: JSONValue] = [:]
            if case .object(let existing) = paths[path] ?? .object([:]) { item = existing }
            item[doc.method.lowercased()] = .object(op)
            paths[path] = .object(item)
        }
        return [
            "openapi": "3.1.0",
            "info": [
                "title": "Kiln API", "version": .string(KilnVersion.version),
                "description":
                    "Kiln: a self-hosted developer workspace server. Errors use one shape everywhere; lists page with limit and cursor.",
            ],
            "servers": [["url": "/"]],
            "paths": .object(paths),
            "components": [
                "securitySchemes": [
                    "session": ["type": "apiKey", "in": "cookie", "name": "kiln_session"],
                    "apiKey": [
                        "type": "http", "scheme": "bearer",
                        "description": "An API key: kf_ followed by 40 base62 characters",
                    ],
                ],
                "schemas": [
                    "Error": [
                        "type": "object", "required": ["error", "request_id"],
                        "properties": [
                            "error": [
                                "type": "object", "required": ["code", "message", "details"],
                                "properties": [
                                    "code": ["type": "string"], "message": ["type": "string"],
                                    "details": ["type": "object"],
                                ],
                            ],
                            "request_id": ["type": "string"],
                        ],
                    ]
                ],
                "responses": [
                    "Error": [
                        "description": "An error in the shared shape",
                        "content": ["application/json": ["schema": ["$ref": "#/components/schemas/Error"]]],
                    ]
                ],
            ],
        ]
    }

    /// `/a/:id/*rest` → (`/a/{id}/{rest}`, [id, rest]).
    static func openAPIPath(_ pattern: String) -> (String, [String]) {
        var params: [String] = []
        let parts = pattern.split(separator: "/").map { seg -> String in
            if seg.hasPrefix(":") || seg.hasPrefix("*") {
                let n = String(seg.dropFirst())
                params.append(n)
                return "{\(n)}"
            }
            return String(seg)
        }
        return ("/" + parts.joined(separator: "/"), params)
    }

    static func operationID(_ method: String, _ path: String) -> String {
        method.lowercased()
            + path.split(separator: "/").map { seg in
                let s = seg.filter { $0.isLetter || $0.isNumber }
                return s.prefix(1).uppercased() + s.dropFirst()
            }.joined()
    }
}
