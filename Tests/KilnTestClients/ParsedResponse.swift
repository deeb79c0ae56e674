import Foundation
import Glibc

/// A response parsed from raw bytes (status, headers, body), for assertions.
public struct ParsedResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]
    public var bodyText: String { String(decoding: body, as: UTF8.self) }
    public func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }

    public static func parseAll(_ data: [UInt8]) -> [ParsedResponse] {
        var out: [ParsedResponse] = []
        var i = 0
        while let (r, used) = parseOne(Array(data[i...])) {
            out.append(r)
            i += used
        }
        return out
    }

    public static func parseOne(_ d: [UInt8]) -> (ParsedResponse, Int)? {
        guard let end = find(d, Array("\r\n\r\n".utf8), from: 0) else { return nil }
        let head = String(decoding: d[0..<end], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        let headers = lines.map { l -> (String, String) in
            let p = l.split(separator: ":", maxSplits: 1)
            return (String(p[0]), p.count > 1 ? p[1].trimmingCharacters(in: .whitespaces) : "")
        }
        var r = ParsedResponse(status: status, headers: headers, body: [])
        var pos = end + 4
        if status == 100 || status == 101 { return (r, pos) }
        if let te = r.header("Transfer-Encoding"), te == "chunked" {
            while true {
                guard let le = find(d, [13, 10], from: pos) else { return nil }
                guard let size = Int(String(decoding: d[pos..<le], as: UTF8.self), radix: 16) else { return nil }
                pos = le + 2
                if size == 0 {
                    guard d.count >= pos + 2 else { return nil }
                    pos += 2
                    break
                }
                guard d.count >= pos + size + 2 else { return nil }
                r.body.append(contentsOf: d[pos..<(pos + size)])
                pos += size + 2
            }
            return (r, pos)
        }
        let len = Int(r.header("Content-Length") ?? "0") ?? 0
        guard d.count >= pos + len else { return nil }
        r.body = Array(d[pos..<(pos + len)])
        return (r, pos + len)
    }

    public static func find(_ d: [UInt8], _ needle: [UInt8], from: Int) -> Int? {
        guard d.count >= needle.count else { return nil }
        var i = from
        while i + needle.count <= d.count {
            if d[i] == needle[0] && Array(d[i..<(i + needle.count)]) == needle { return i }
            i += 1
        }
        return nil
    }
}
