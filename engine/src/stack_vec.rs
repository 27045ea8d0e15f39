//! A fixed-capacity list kept inline (on the stack or inside a struct).
//!
//! The hot path produces a few items per input (events per tick, ticks per venue
//! message) and must not allocate; this holds them in a plain array with a length.
//! Pushing past the capacity drops the item and reports it: callers size the
//! capacity to the most a single input can produce.

/// A value to pre-fill unused slots with (never observed by readers).
pub trait Placeholder: Copy {
    const PLACEHOLDER: Self;
}

#[derive(Debug, Clone, Copy)]
pub struct StackVec<T: Placeholder, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Placeholder, const N: usize> Default for StackVec<T, N> {
    fn default() -> Self {
        Self {
            items: [T::PLACEHOLDER; N],
            len: 0,
        }
    }
}

impl<T: Placeholder, const N: usize> StackVec<T, N> {
    /// Appends `item`; `false` (and nothing stored) when full.
    #[inline]
    pub fn push(&mut self, item: T) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = item;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    #[inline]
    pub fn as_slice(&self) -> &[T] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Placeholder for u8 {
        const PLACEHOLDER: Self = 0;
    }

    #[test]
    fn bounded_push() {
        let mut v = StackVec::<u8, 2>::default();
        assert!(v.push(1) && v.push(2));
        assert!(!v.push(3));
        assert_eq!(v.as_slice(), &[1, 2]);
        v.clear();
        assert!(v.is_empty());
    }
}
