import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) and ISO 8601 with milliseconds, without formatters.
public enum HTTPDate {
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    private static func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }

    private static func breakDown(_ seconds: Int) -> tm {
        var t = time_t(seconds)
        var out = tm()
        gmtime_r(&t, &out)
        return out
    }

    public static func format(_ date: Date) -> String {
        format(epochSeconds: Int(date.timeIntervalSince1970.rounded(.down)))
    }

    public static func format(epochSeconds: Int) -> String {
        let t = breakDown(epochSeconds)
        return
            "\(days[Int(t.tm_wday)]), \(two(t.tm_mday)) \(months[Int(t.tm_mon)]) \(t.tm_year + 1900) \(two(t.tm_hour)):\(two(t.tm_min)):\(two(t.tm_sec)) GMT"
    }

    /// Parses IMF-fixdate; nil for anything else.
    public static func parse(_ s: String) -> Date? {
        let p = s.split(separator: " ")
        guard p.count == 6, p[5] == "GMT", let day = Int(p[1]), let mon = months.firstIndex(of: String(p[2])),
            let year = Int(p[3])
        else { return nil }
        let hms = p[4].split(separator: ":").compactMap { Int($0) }
        guard hms.count == 3 else { return nil }
        var t = tm()
        t.tm_year = Int32(year - 1900)
        t.tm_mon = Int32(mon)
        t.tm_mday = Int32(day)
        t.tm_hour = Int32(hms[0])
        t.tm_min = Int32(hms[1])
        t.tm_sec = Int32(hms[2])
        return Date(timeIntervalSince1970: TimeInterval(timegm(&t)))
    }

    /// `2026-01-15T10:00:00.000Z`
    public static func iso8601(_ date: Date) -> String {
        let ms = Int((date.timeIntervalSince1970 * 1000).rounded(.down))
        let secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
        let frac = ms - secs * 1000
        let t = breakDown(secs)
        let f = frac < 10 ? "00\(frac)" : frac < 100 ? "0\(frac)" : "\(frac)"
        return
            "\(t.tm_year + 1900)-\(two(t.tm_mon + 1))-\(two(t.tm_mday))T\(two(t.tm_hour)):\(two(t.tm_min)):\(two(t.tm_sec)).\(f)Z"
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC only).
    public static func parseISO8601(_ s: String) -> Date? {
        let u = Array(s.utf8)
        guard u.count >= 20, u.last == UInt8(ascii: "Z"), u[4] == 45, u[7] == 45, u[10] == 84, u[13] == 58, u[16] == 58
        else { return nil }
        func num(_ r: Range<Int>) -> Int? {
            var v = 0
            for i in r {
                guard u[i] >= 48 && u[i] <= 57 else { return nil }
                v = v * 10 + Int(u[i] - 48)
            }
            return v
        }
        guard let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10), let h = num(11..<13), let mi = num(14..<16),
            let se = num(17..<19), (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, se < 61
        else { return nil }
        var ms = 0.0
        if u.count > 20 {
            guard u[19] == 46, u.count >= 22, let f = num(20..<(u.count - 1)) else { return nil }
            ms = Double(f) / pow(10, Double(u.count - 21))
        } else if u[19] != UInt8(ascii: "Z") {
            return nil
        }
        var t = tm()
        t.tm_year = Int32(y - 1900)
        t.tm_mon = Int32(mo - 1)
        t.tm_mday = Int32(d)
        t.tm_hour = Int32(h)
        t.tm_min = Int32(mi)
        t.tm_sec = Int32(se)
        return Date(timeIntervalSince1970: TimeInterval(timegm(&t)) + ms)
    }
}

/// The project's JSON conventions: snake_case keys, ISO 8601 UTC dates with milliseconds.
public enum JSONCoding {
    public static func makeEncoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.withoutEscapingSlashes]
        e.dateEncodingStrategy = .custom { date, enc in
            var c = enc.singleValueContainer()
            try c.encode(HTTPDate.iso8601(date))
        }
        return e
    }

    public static func makeDecoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        d.dateDecodingStrategy = .custom { dec in
            let c = try dec.singleValueContainer()
            let s = try c.decode(String.self)
            guard let date = HTTPDate.parseISO8601(s) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "Expected an ISO 8601 UTC timestamp")
            }
            return date
        }
        return d
    }

    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] { Array(try makeEncoder().encode(value)) }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        do { return try makeDecoder().decode(type, from: Data(bytes)) } catch let e as DecodingError {
            throw decodingFailure(e)
        }
    }
}

/// API models that encode every stored property, writing `null` for an absent optional (Swift's
/// synthesized Encodable drops the key, and clients should be able to rely on it being there).
public protocol NullEncoding: Encodable {}

struct DynamicKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension NullEncoding {
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: DynamicKey.self)
        for child in Mirror(reflecting: self).children {
            guard let label = child.label else { continue }
            let key = DynamicKey(label)
            let m = Mirror(reflecting: child.value)
            if m.displayStyle == .optional {
                guard let inner = m.children.first?.value else {
                    try c.encodeNil(forKey: key)
                    continue
                }
                guard let e = inner as? any Encodable else { continue }
                try c.encode(e, forKey: key)
            } else if let e = child.value as? any Encodable {
                try c.encode(e, forKey: key)
            }
        }
    }
}
