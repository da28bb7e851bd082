//! Just enough of Python's pickle format (protocols 2-5) to read torch
//! DCP's `.metadata` without Python: values, containers, and objects kept
//! as (class, constructor args, state) without running any code.
//!
//! The input comes from storage, so nothing in it is trusted: every length
//! is checked against the bytes that remain before anything is allocated,
//! and unknown opcodes are errors, never guesses.

use std::cell::RefCell;
use std::rc::Rc;

/// A pickled value. Containers and objects are shared (`Rc`) because the
/// memo lets a pickle refer to one object from several places, and BUILD
/// sets an object's state after it has been memoised.
///
/// The payloads of `BigInt`, `Float` and `Bytes` are read only through
/// `Debug`, which error messages use to show what was found where the DCP
/// reader wanted something else; rustc does not count that as a read.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64 (its little-endian bytes).
    BigInt(Rc<Vec<u8>>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<Vec<u8>>),
    List(Rc<RefCell<Vec<Value>>>),
    Tuple(Rc<Vec<Value>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// `module.name`, as GLOBAL / STACK_GLOBAL name it.
    Global(Rc<(String, String)>),
    Object(Rc<RefCell<Object>>),
}

/// An instance the pickle would construct: never constructed here.
#[derive(Debug, Clone)]
pub struct Object {
    pub class: Value,
    pub args: Vec<Value>,
    pub state: Option<Value>,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// Items of a list or tuple (a copy).
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::List(l) => Some(l.borrow().clone()),
            Value::Tuple(t) => Some(t.as_ref().clone()),
            _ => None,
        }
    }

    /// `self[key]` for a dict with string keys.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => d
                .borrow()
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    }

    /// An object's attribute: from its state dict (or the dict part of a
    /// `(dict, slots)` state).
    pub fn attr(&self, name: &str) -> Option<Value> {
        let Value::Object(o) = self else {
            return None;
        };
        let o = o.borrow();
        match o.state.as_ref()? {
            d @ Value::Dict(_) => d.get(name),
            Value::Tuple(t) => t.iter().find_map(|part| part.get(name)),
            _ => None,
        }
    }

    /// `module.name` of an object's class.
    pub fn class_name(&self) -> Option<String> {
        let Value::Object(o) = self else {
            return None;
        };
        match &o.borrow().class {
            Value::Global(g) => Some(format!("{}.{}", g.0, g.1)),
            _ => None,
        }
    }

    /// Constructor arguments of an object (`torch.Size([...])` has one).
    pub fn args(&self) -> Option<Vec<Value>> {
        match self {
            Value::Object(o) => Some(o.borrow().args.clone()),
            _ => None,
        }
    }
}

/// Stack entries: values, or the MARK that opens a run of them.
enum Slot {
    Mark,
    Val(Value),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "truncated: {n} bytes wanted at offset {}, {} left",
                    self.pos,
                    self.data.len() - self.pos
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }

    /// A length prefix, checked against what is left before use.
    fn len(&mut self, n: usize) -> Result<usize, String> {
        let v = self.uint(n)?;
        let left = (self.data.len() - self.pos) as u64;
        if v > left {
            return Err(format!(
                "length {v} at offset {} exceeds the {left} bytes left",
                self.pos
            ));
        }
        Ok(v as usize)
    }

    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated text line")?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| "text line is not UTF-8".to_string())
    }
}

fn text(b: &[u8]) -> Result<Value, String> {
    std::str::from_utf8(b)
        .map(|s| Value::Str(Rc::from(s)))
        .map_err(|_| "string is not UTF-8".to_string())
}

fn signed(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() <= 8 {
        let neg = bytes[bytes.len() - 1] & 0x80 != 0;
        let mut v: u64 = if neg { u64::MAX } else { 0 };
        for (i, &b) in bytes.iter().enumerate() {
            v &= !(0xFFu64 << (8 * i));
            v |= u64::from(b) << (8 * i);
        }
        return Value::Int(v as i64);
    }
    Value::BigInt(Rc::new(bytes.to_vec()))
}

/// Decode one pickle. `Err` says what was wrong and where.
pub fn load(data: &[u8]) -> Result<Value, String> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: Vec<Option<Value>> = Vec::new();

    fn pop(stack: &mut Vec<Slot>) -> Result<Value, String> {
        match stack.pop() {
            Some(Slot::Val(v)) => Ok(v),
            Some(Slot::Mark) => Err("a MARK where a value was expected".into()),
            None => Err("stack underflow".into()),
        }
    }
    fn pop_mark(stack: &mut Vec<Slot>) -> Result<Vec<Value>, String> {
        let at = stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or("no MARK on the stack")?;
        let items = stack
            .drain(at + 1..)
            .map(|s| match s {
                Slot::Val(v) => v,
                Slot::Mark => Value::None,
            })
            .collect();
        stack.pop();
        Ok(items)
    }
    fn top(stack: &mut [Slot]) -> Result<&mut Value, String> {
        match stack.last_mut() {
            Some(Slot::Val(v)) => Ok(v),
            _ => Err("no value on the stack".into()),
        }
    }
    fn memo_put(memo: &mut Vec<Option<Value>>, idx: usize, v: Value) -> Result<(), String> {
        // Memo indices are dense in what pickle writes; a far one is garbage.
        if idx > memo.len() + 1_000_000 {
            return Err(format!("memo index {idx} out of range"));
        }
        if idx >= memo.len() {
            memo.resize(idx + 1, None);
        }
        memo[idx] = Some(v);
        Ok(())
    }
    fn set_items(target: &Value, items: Vec<Value>) -> Result<(), String> {
        let Value::Dict(d) = target else {
            return Err("SETITEMS on a non-dict".into());
        };
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?; // PROTO
            }
            0x95 => {
                r.take(8)?; // FRAME: a hint only
            }
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Slot::Mark),
            b'}' => stack.push(Slot::Val(Value::Dict(Rc::default()))),
            b']' => stack.push(Slot::Val(Value::List(Rc::default()))),
            b')' => stack.push(Slot::Val(Value::Tuple(Rc::default()))),
            0x8f => stack.push(Slot::Val(Value::List(Rc::default()))), // EMPTY_SET
            b'N' => stack.push(Slot::Val(Value::None)),
            0x88 => stack.push(Slot::Val(Value::Bool(true))),
            0x89 => stack.push(Slot::Val(Value::Bool(false))),
            b'J' => {
                let v = r.uint(4)? as u32 as i32;
                stack.push(Slot::Val(Value::Int(i64::from(v))))
            }
            b'K' => stack.push(Slot::Val(Value::Int(r.uint(1)? as i64))),
            b'M' => stack.push(Slot::Val(Value::Int(r.uint(2)? as i64))),
            0x8a => {
                let n = r.len(1)?;
                stack.push(Slot::Val(signed(r.take(n)?)))
            }
            0x8b => {
                let n = r.len(4)?;
                stack.push(Slot::Val(signed(r.take(n)?)))
            }
            b'G' => {
                let b = r.take(8)?;
                let mut w = [0u8; 8];
                w.copy_from_slice(b);
                stack.push(Slot::Val(Value::Float(f64::from_be_bytes(w))))
            }
            0x8c => {
                let n = r.len(1)?;
                stack.push(Slot::Val(text(r.take(n)?)?))
            }
            b'X' => {
                let n = r.len(4)?;
                stack.push(Slot::Val(text(r.take(n)?)?))
            }
            0x8d => {
                let n = r.len(8)?;
                stack.push(Slot::Val(text(r.take(n)?)?))
            }
            b'C' => {
                let n = r.len(1)?;
                stack.push(Slot::Val(Value::Bytes(Rc::new(r.take(n)?.to_vec()))))
            }
            b'B' => {
                let n = r.len(4)?;
                stack.push(Slot::Val(Value::Bytes(Rc::new(r.take(n)?.to_vec()))))
            }
            0x8e | 0x96 => {
                let n = r.len(8)?;
                stack.push(Slot::Val(Value::Bytes(Rc::new(r.take(n)?.to_vec()))))
            }
            0x94 => {
                let v = top(&mut stack)?.clone();
                let idx = memo.len();
                memo_put(&mut memo, idx, v)?;
            }
            b'q' => {
                let idx = r.uint(1)? as usize;
                let v = top(&mut stack)?.clone();
                memo_put(&mut memo, idx, v)?;
            }
            b'r' => {
                let idx = r.uint(4)? as usize;
                let v = top(&mut stack)?.clone();
                memo_put(&mut memo, idx, v)?;
            }
            b'h' | b'j' => {
                let idx = if op == b'h' { r.uint(1)? } else { r.uint(4)? } as usize;
                let v = memo
                    .get(idx)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| format!("memo entry {idx} is not set"))?;
                stack.push(Slot::Val(v));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                let (Some(m), Some(n)) = (module.as_str(), name.as_str()) else {
                    return Err("STACK_GLOBAL of non-strings".into());
                };
                stack.push(Slot::Val(Value::Global(Rc::new((m.into(), n.into())))));
            }
            b'c' => {
                let m = r.line()?.to_string();
                let n = r.line()?.to_string();
                stack.push(Slot::Val(Value::Global(Rc::new((m, n)))));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match top(&mut stack)? {
                    Value::List(l) => l.borrow_mut().push(v),
                    _ => return Err("APPEND to a non-list".into()),
                }
            }
            b'e' | 0x90 => {
                let items = pop_mark(&mut stack)?;
                match top(&mut stack)? {
                    Value::List(l) => l.borrow_mut().extend(items),
                    _ => return Err("APPENDS to a non-list".into()),
                }
            }
            0x91 => {
                let items = pop_mark(&mut stack)?;
                stack.push(Slot::Val(Value::List(Rc::new(RefCell::new(items)))));
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                set_items(top(&mut stack)?, vec![k, v])?;
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                set_items(top(&mut stack)?, items)?;
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Slot::Val(Value::Tuple(Rc::new(items))));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&mut stack)?);
                }
                items.reverse();
                stack.push(Slot::Val(Value::Tuple(Rc::new(items))));
            }
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Slot::Val(Value::List(Rc::new(RefCell::new(items)))));
            }
            b'd' => {
                let items = pop_mark(&mut stack)?;
                let d = Value::Dict(Rc::default());
                set_items(&d, items)?;
                stack.push(Slot::Val(d));
            }
            0x81 | b'R' => {
                // NEWOBJ (cls, args) / REDUCE (callable, args).
                let args = pop(&mut stack)?;
                let class = pop(&mut stack)?;
                let args = args
                    .items()
                    .ok_or("constructor arguments are not a tuple")?;
                stack.push(Slot::Val(Value::Object(Rc::new(RefCell::new(Object {
                    class,
                    args,
                    state: None,
                })))));
            }
            0x92 => {
                let _kwargs = pop(&mut stack)?;
                let args = pop(&mut stack)?;
                let class = pop(&mut stack)?;
                let args = args
                    .items()
                    .ok_or("constructor arguments are not a tuple")?;
                stack.push(Slot::Val(Value::Object(Rc::new(RefCell::new(Object {
                    class,
                    args,
                    state: None,
                })))));
            }
            b'b' => {
                let state = pop(&mut stack)?;
                match top(&mut stack)? {
                    Value::Object(o) => o.borrow_mut().state = Some(state),
                    _ => return Err("BUILD on a non-object".into()),
                }
            }
            b'0' => {
                stack.pop().ok_or("POP on an empty stack")?;
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let v = top(&mut stack)?.clone();
                stack.push(Slot::Val(v));
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode {other:#04x} at offset {}",
                    r.pos - 1
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_python_writes() {
        // pickle.dumps({"a": [1, -2, 3.5, None, True], "b": ("x", b"\x00")}, 4)
        let data: &[u8] = b"\x80\x04\x95-\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00N\x88e\x8c\x01b\x94\x8c\x01x\x94C\x01\x00\x94\x86\x94u.";
        let v = load(data).unwrap();
        let a = v.get("a").unwrap().items().unwrap();
        assert_eq!(a[0].as_int(), Some(1));
        assert_eq!(a[1].as_int(), Some(-2));
        assert!(matches!(a[2], Value::Float(f) if f == 3.5));
        assert!(matches!(a[3], Value::None));
        let b = v.get("b").unwrap().items().unwrap();
        assert_eq!(b[0].as_str(), Some("x"));
    }

    #[test]
    fn lying_lengths_are_errors_not_allocations() {
        // BINUNICODE claiming 4 GiB in a 10-byte input.
        assert!(load(b"\x80\x04X\xff\xff\xff\xffab.").is_err());
        assert!(load(b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f.").is_err());
        assert!(load(b"").is_err());
        assert!(load(b"\x80\x04\xff.").is_err());
    }
}
